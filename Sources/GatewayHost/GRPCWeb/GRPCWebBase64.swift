import NIOCore

/// The base64 of `application/grpc-web-text`, as streams: bodies arrive
/// and leave in chunks that need not end on a 3-byte (encoding) or
/// 4-character (decoding) boundary, so each side carries the remainder to
/// the next chunk. A decoder also accepts padding inside the stream
/// (PROTOCOL-WEB.md: a text body may be several padded base64 pieces).
enum GRPCWebBase64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 0...63 for an alphabet byte, 64 for '=', 255 for anything else.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        table[Int(UInt8(ascii: "="))] = 64
        return table
    }()

    struct Encoder {
        /// Up to two bytes waiting for a third.
        private var carry: (UInt8, UInt8) = (0, 0)
        private var carried = 0

        /// The base64 of the bytes so far that fill whole 3-byte groups.
        mutating func encode(_ input: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
            var out = allocator.buffer(capacity: (input.readableBytes + carried) / 3 * 4)
            input.withUnsafeReadableBytes { bytes in
                var i = 0
                if carried > 0 {
                    while carried < 3 && i < bytes.count {
                        if carried == 1 { carry.1 = bytes[i] } else {
                            Self.write(carry.0, carry.1, bytes[i], count: 3, to: &out)
                        }
                        carried += 1
                        i += 1
                    }
                    if carried == 3 { carried = 0 } else { return }
                }
                while i + 3 <= bytes.count {
                    Self.write(bytes[i], bytes[i + 1], bytes[i + 2], count: 3, to: &out)
                    i += 3
                }
                carried = bytes.count - i
                if carried >= 1 { carry.0 = bytes[i] }
                if carried == 2 { carry.1 = bytes[i + 1] }
            }
            return out
        }

        /// The last group, padded (empty when nothing is carried).
        mutating func finish(allocator: ByteBufferAllocator) -> ByteBuffer {
            var out = allocator.buffer(capacity: 4)
            if carried > 0 { Self.write(carry.0, carried == 2 ? carry.1 : 0, 0, count: carried, to: &out) }
            carried = 0
            return out
        }

        private static func write(_ a: UInt8, _ b: UInt8, _ c: UInt8, count: Int, to out: inout ByteBuffer) {
            let table = GRPCWebBase64.alphabet
            out.writeInteger(table[Int(a >> 2)])
            out.writeInteger(table[Int((a & 0x03) << 4 | b >> 4)])
            out.writeInteger(count > 1 ? table[Int((b & 0x0f) << 2 | c >> 6)] : UInt8(ascii: "="))
            out.writeInteger(count > 2 ? table[Int(c & 0x3f)] : UInt8(ascii: "="))
        }
    }

    struct Decoder {
        struct Invalid: Error {}
        private var quad: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        private var filled = 0

        /// Whether no partial group is waiting.
        var isAtBoundary: Bool { filled == 0 }

        /// The bytes of the whole 4-character groups so far. Throws on a
        /// byte outside the alphabet or misplaced padding.
        mutating func decode(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(Invalid) -> ByteBuffer {
            var out = allocator.buffer(capacity: (input.readableBytes + filled) / 4 * 3)
            let values = GRPCWebBase64.values
            var failed = false
            input.withUnsafeReadableBytes { bytes in
                for byte in bytes {
                    let v = values[Int(byte)]
                    if v == 255 {
                        // Line breaks are tolerated (some encoders wrap).
                        if byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") { continue }
                        failed = true
                        return
                    }
                    switch filled {
                    case 0: quad.0 = v
                    case 1: quad.1 = v
                    case 2: quad.2 = v
                    default: quad.3 = v
                    }
                    filled += 1
                    guard filled == 4 else { continue }
                    filled = 0
                    let (a, b, c, d) = quad
                    guard a < 64, b < 64, !(c == 64 && d != 64) else {
                        failed = true
                        return
                    }
                    out.writeInteger(a << 2 | b >> 4)
                    if c < 64 { out.writeInteger((b & 0x0f) << 4 | c >> 2) }
                    if d < 64 { out.writeInteger((c & 0x03) << 6 | d) }
                }
            }
            if failed { throw Invalid() }
            return out
        }
    }
}
