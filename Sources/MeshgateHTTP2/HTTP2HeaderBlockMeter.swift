/// Which limit a received header block passed (see `HTTP2HeaderBlockMeter`).
public enum HTTP2HeaderLimitViolation: Sendable, Equatable, CustomStringConvertible {
    /// The block's size, counted as RFC 9113 §6.5.2 does (each field's
    /// name and value lengths plus 32), passed `limit` bytes.
    case bytes(limit: Int)
    /// The block held more than `limit` fields (pseudo-headers included).
    case fields(limit: Int)

    public var description: String {
        switch self {
        case .bytes(let limit): "a header block over \(limit) bytes"
        case .fields(let limit): "a header block of more than \(limit) fields"
        }
    }
}

/// Measures the header block being received on one stream as nghttp2
/// decodes it, field by field, before the field is copied anywhere.
///
/// nghttp2 does not enforce SETTINGS_MAX_HEADER_LIST_SIZE on what it
/// receives: HPACK lets a peer reference one large dynamic-table entry with
/// a single byte, so a 147 KB block can decode to gigabytes of fields. The
/// meter is what keeps a block's cost to its limit: once a field would
/// pass it, the block is over, and the rest of its fields are dropped
/// unread.
///
/// A request head over the limit is still answered (with a status naming
/// the limit) once the block ends, so its dropped fields are counted on;
/// a block that decodes past `cutoff(forLimit:)` can only be HPACK
/// references repeated (an honest block of at most nine 16 KB frames does
/// not decode to that much), and decoding it to the end would cost the
/// loop nghttp2's checks of every field: such a block is cut off with
/// RST_STREAM at once (nghttp2 then decodes the rest without checks or
/// callbacks, as it must to keep HPACK's table in step).
struct HTTP2HeaderBlockMeter {
    /// RFC 9113 §6.5.2: a field costs its name and value plus 32 octets.
    static let fieldOverhead = 32

    private(set) var bytes = 0
    private(set) var fields = 0
    /// Set by the field that passed a limit; the block is then over.
    private(set) var violation: HTTP2HeaderLimitViolation?

    /// The decoded size past which a block is an amplification attack:
    /// eight times the limit, and at least 512 KiB.
    static func cutoff(forLimit limit: Int) -> Int { Swift.max(8 * limit, 512 << 10) }

    /// A field of a block that is over already, dropped: counted towards
    /// the cutoff. False once the block's decoded size passed `cutoff`.
    @inline(__always)
    mutating func countDropped(nameAndValueBytes size: Int, cutoff: Int) -> Bool {
        fields += 1
        bytes += size + Self.fieldOverhead
        return bytes <= cutoff
    }

    /// A new block begins.
    mutating func reset() {
        bytes = 0
        fields = 0
        violation = nil
    }

    /// One more field of `size` name and value bytes: true while the block
    /// is within `maxBytes` and `maxFields`; false from the field that
    /// passes one of them on (and for every field after it).
    @inline(__always)
    mutating func admit(nameAndValueBytes size: Int, maxBytes: Int, maxFields: Int) -> Bool {
        guard violation == nil else { return false }
        fields += 1
        bytes += size + Self.fieldOverhead
        if bytes > maxBytes {
            violation = .bytes(limit: maxBytes)
            return false
        }
        if fields > maxFields {
            violation = .fields(limit: maxFields)
            return false
        }
        return true
    }
}
