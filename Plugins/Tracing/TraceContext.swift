/// A W3C/OTel trace id: 16 bytes kept as two big-endian halves, so ids
/// cost no allocation on the data path.
struct TraceID: Equatable {
    var high: UInt64
    var low: UInt64
}

/// W3C Trace Context (`traceparent`): version 00, a 16-byte trace id, an
/// 8-byte parent span id and the flags byte (bit 0: sampled).
struct TraceParent: Equatable {
    static let length = 55

    var traceID: TraceID
    var parentID: UInt64
    var flags: UInt8

    var sampled: Bool { flags & 1 != 0 }

    init(traceID: TraceID, parentID: UInt64, flags: UInt8) {
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` read straight from the
    /// request's header bytes; nil for anything else, an all-zero id, or
    /// version ff (the spec's "invalid").
    init?(_ text: UnsafeRawBufferPointer) {
        guard text.count >= Self.length, text[2] == UInt8(ascii: "-"), text[35] == UInt8(ascii: "-"), text[52] == UInt8(ascii: "-"),
              let version = Hex.parse(text, at: 0, digits: 2), version != 0xff,
              let high = Hex.parse(text, at: 3, digits: 16), let low = Hex.parse(text, at: 19, digits: 16),
              let parent = Hex.parse(text, at: 36, digits: 16), let flags = Hex.parse(text, at: 53, digits: 2),
              high | low != 0, parent != 0 else { return nil }
        // Version 00 is exactly 55 bytes; later versions may append fields
        // after a dash.
        guard version == 0 ? text.count == Self.length : (text.count == Self.length || text[55] == UInt8(ascii: "-")) else { return nil }
        self.init(traceID: TraceID(high: high, low: low), parentID: parent, flags: UInt8(flags))
    }

    /// Writes the 55 bytes of `00-<trace>-<parent>-<flags>` at the start of `out`.
    func write(into out: UnsafeMutableRawBufferPointer) {
        out[0] = UInt8(ascii: "0")
        out[1] = UInt8(ascii: "0")
        out[2] = UInt8(ascii: "-")
        Hex.write(traceID.high, digits: 16, into: out, at: 3)
        Hex.write(traceID.low, digits: 16, into: out, at: 19)
        out[35] = UInt8(ascii: "-")
        Hex.write(parentID, digits: 16, into: out, at: 36)
        out[52] = UInt8(ascii: "-")
        Hex.write(UInt64(flags), digits: 2, into: out, at: 53)
    }
}

/// Lower-case hex, as W3C requires, read and written in place.
enum Hex {
    /// The low `digits` nibbles of `value`, most significant first.
    static func write(_ value: UInt64, digits: Int, into out: UnsafeMutableRawBufferPointer, at start: Int) {
        for i in 0..<digits {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt64(4 * (digits - 1 - i))) & 0xf
            out[start + i] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
        }
    }

    /// `digits` (at most 16) lower-case hex digits at `start`; nil when any is not one.
    static func parse(_ text: UnsafeRawBufferPointer, at start: Int, digits: Int) -> UInt64? {
        var value: UInt64 = 0
        for i in start..<start + digits {
            let c = text[i]
            let nibble: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt64(nibble)
        }
        return value
    }
}

/// xoshiro256** seeded from the system: ids without a syscall per span.
/// One per instance, so per event loop: never shared between threads.
struct IDGenerator {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init() {
        var g = SystemRandomNumberGenerator()
        s = (g.next(), g.next(), g.next(), g.next() | 1)
    }

    mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// A span id: never zero (W3C's invalid id).
    mutating func spanID() -> UInt64 {
        while true {
            let v = next()
            if v != 0 { return v }
        }
    }

    mutating func traceID() -> TraceID { TraceID(high: next(), low: spanID()) }

    /// A uniform draw in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
