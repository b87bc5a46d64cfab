/// The protobuf wire format, just what Meshgate's hand-encoded messages
/// need: the few etcd v3 calls (whose generated code would drag in
/// gogoproto and google.api) and OTLP spans from the Tracing plugin (which
/// may depend on nothing but the filter ABI at run time).
public struct ProtoWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func varint(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        tag(field, wireType: 0)
        raw(value)
    }

    /// A varint field written even when zero (a oneof member must be).
    public mutating func varintAlways(_ field: Int, _ value: UInt64) {
        tag(field, wireType: 0)
        raw(value)
    }

    public mutating func int64(_ field: Int, _ value: Int64) { varint(field, UInt64(bitPattern: value)) }

    public mutating func bool(_ field: Int, _ value: Bool) { varint(field, value ? 1 : 0) }

    public mutating func bytes(_ field: Int, _ value: [UInt8]) {
        guard !value.isEmpty else { return }
        tag(field, wireType: 2)
        raw(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// Wire type 1: protobuf's fixed64 (OTLP timestamps).
    public mutating func fixed64(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        tag(field, wireType: 1)
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
    }

    public mutating func string(_ field: Int, _ value: String) { utf8(field, value.utf8) }

    public mutating func string(_ field: Int, _ value: Substring) { utf8(field, value.utf8) }

    public mutating func string(_ field: Int, _ value: StaticString) {
        guard value.utf8CodeUnitCount > 0 else { return }
        tag(field, wireType: 2)
        raw(UInt64(value.utf8CodeUnitCount))
        value.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    private mutating func utf8<C: Collection>(_ field: Int, _ value: C) where C.Element == UInt8 {
        let count = value.count
        guard count > 0 else { return }
        tag(field, wireType: 2)
        raw(UInt64(count))
        bytes.append(contentsOf: value)
    }

    /// A bytes field holding `value` big-endian (an 8-byte OTLP span id).
    public mutating func fixedBytes(_ field: Int, _ value: UInt64) {
        tag(field, wireType: 2)
        raw(8)
        bigEndian(value)
    }

    /// A bytes field of 16 bytes, `high` then `low`, big-endian (an OTLP trace id).
    public mutating func fixedBytes(_ field: Int, high: UInt64, low: UInt64) {
        tag(field, wireType: 2)
        raw(16)
        bigEndian(high)
        bigEndian(low)
    }

    private mutating func bigEndian(_ value: UInt64) {
        for i in (0..<8).reversed() { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
    }

    /// Bytes already encoded (whole fields copied from a `ProtoReader`'s
    /// input between two `offset`s).
    public mutating func append(encoded: ArraySlice<UInt8>) { bytes.append(contentsOf: encoded) }

    /// Empties the writer but keeps its buffer, for the next message.
    public mutating func reset() { bytes.removeAll(keepingCapacity: true) }

    /// A length-delimited field whose content `body` writes in place; the
    /// length is patched in afterwards, so nesting copies nothing (beyond a
    /// shift of the content when its length needs more than one byte).
    public mutating func nested(_ field: Int, _ body: (inout ProtoWriter) -> Void) {
        tag(field, wireType: 2)
        let mark = bytes.count
        bytes.append(0)
        body(&self)
        let length = bytes.count - mark - 1
        var size = 1
        while length >> (7 * size) != 0 { size += 1 }
        if size > 1 { bytes.insert(contentsOf: repeatElement(0, count: size - 1), at: mark + 1) }
        var v = length
        for i in 0..<size {
            bytes[mark + i] = UInt8(v & 0x7f) | (i < size - 1 ? 0x80 : 0)
            v >>= 7
        }
    }

    /// A double, wire type 1.
    public mutating func double(_ field: Int, _ value: Double) {
        tag(field, wireType: 1)
        let bits = value.bitPattern
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i)))) }
    }

    public mutating func message(_ field: Int, _ value: ProtoWriter) {
        tag(field, wireType: 2)
        raw(UInt64(value.bytes.count))
        bytes.append(contentsOf: value.bytes)
    }

    private mutating func tag(_ field: Int, wireType: UInt64) { raw(UInt64(field) << 3 | wireType) }

    private mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
}

public struct ProtoDecodeError: Error, CustomStringConvertible {
    public let description: String
}

/// Reads fields one after the other; unknown fields are skipped.
public struct ProtoReader {
    public enum Value {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed
    }

    private let bytes: ArraySlice<UInt8>
    private var index: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    public init(_ bytes: [UInt8]) { self.init(bytes[...]) }

    /// Where the next field starts, in the input's indices: the bytes
    /// between two offsets are whole encoded fields.
    public var offset: Int { index }

    public mutating func next() throws(ProtoDecodeError) -> (field: Int, value: Value)? {
        guard index < bytes.endIndex else { return nil }
        let key = try readVarint()
        let field = Int(key >> 3)
        switch key & 7 {
        case 0: return (field, .varint(try readVarint()))
        case 1: try skip(8); return (field, .fixed)
        case 5: try skip(4); return (field, .fixed)
        case 2:
            let length = try readVarint()
            guard length <= UInt64(bytes.endIndex - index) else { throw ProtoDecodeError(description: "field \(field) runs past the message") }
            let start = index
            index += Int(length)
            return (field, .bytes(bytes[start..<index]))
        default:
            throw ProtoDecodeError(description: "unsupported wire type \(key & 7) for field \(field)")
        }
    }

    private mutating func skip(_ n: Int) throws(ProtoDecodeError) {
        guard bytes.endIndex - index >= n else { throw ProtoDecodeError(description: "truncated fixed-size field") }
        index += n
    }

    private mutating func readVarint() throws(ProtoDecodeError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.endIndex, shift < 64 {
            let b = bytes[index]
            index += 1
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        throw ProtoDecodeError(description: "truncated varint")
    }
}

extension ProtoReader.Value {
    public var int64: Int64 {
        if case .varint(let v) = self { return Int64(bitPattern: v) }
        return 0
    }

    public var slice: ArraySlice<UInt8> {
        if case .bytes(let b) = self { return b }
        return []
    }
}
