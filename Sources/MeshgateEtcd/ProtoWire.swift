/// The protobuf wire format, just what the few etcd messages Meshgate
/// speaks need (varints and length-delimited fields). etcd's API is stable
/// and small; generating its whole proto tree for five calls would pull in
/// gogoproto and google.api imports for nothing.
struct ProtoWriter {
    private(set) var bytes: [UInt8] = []

    mutating func varint(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        tag(field, wireType: 0)
        raw(value)
    }

    mutating func int64(_ field: Int, _ value: Int64) { varint(field, UInt64(bitPattern: value)) }

    mutating func bool(_ field: Int, _ value: Bool) { varint(field, value ? 1 : 0) }

    mutating func bytes(_ field: Int, _ value: [UInt8]) {
        guard !value.isEmpty else { return }
        tag(field, wireType: 2)
        raw(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func message(_ field: Int, _ value: ProtoWriter) {
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

struct ProtoDecodeError: Error, CustomStringConvertible {
    let description: String
}

/// Reads fields one after the other; unknown fields are skipped.
struct ProtoReader {
    enum Value {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed
    }

    private let bytes: ArraySlice<UInt8>
    private var index: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    init(_ bytes: [UInt8]) { self.init(bytes[...]) }

    mutating func next() throws(ProtoDecodeError) -> (field: Int, value: Value)? {
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
    var int64: Int64 {
        if case .varint(let v) = self { return Int64(bitPattern: v) }
        return 0
    }

    var slice: ArraySlice<UInt8> {
        if case .bytes(let b) = self { return b }
        return []
    }
}
