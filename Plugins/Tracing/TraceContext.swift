/// W3C Trace Context (`traceparent`): version 00, a 16-byte trace id, an
/// 8-byte parent span id and the flags byte (bit 0: sampled).
struct TraceParent: Equatable {
    var traceID: [UInt8]
    var parentID: [UInt8]
    var flags: UInt8

    var sampled: Bool { flags & 1 != 0 }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; nil for anything else, an
    /// all-zero id, or version ff (the spec's "invalid").
    init?(_ text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count >= 55, bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-"),
              let version = Hex.decode(bytes[0..<2]), version != [0xff],
              let trace = Hex.decode(bytes[3..<35]), let parent = Hex.decode(bytes[36..<52]), let flags = Hex.decode(bytes[53..<55]),
              trace.contains(where: { $0 != 0 }), parent.contains(where: { $0 != 0 }) else { return nil }
        // Version 00 is exactly 55 bytes; later versions may append fields.
        guard version != [0] || bytes.count == 55 else { return nil }
        self.traceID = trace
        self.parentID = parent
        self.flags = flags[0]
    }

    init(traceID: [UInt8], parentID: [UInt8], flags: UInt8) {
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    /// `00-<trace>-<parent>-<flags>`, written into one buffer.
    var header: String {
        String(unsafeUninitializedCapacity: 55) { out in
            out[0] = UInt8(ascii: "0"); out[1] = UInt8(ascii: "0"); out[2] = UInt8(ascii: "-")
            var i = Hex.write(traceID, into: out, at: 3)
            out[i] = UInt8(ascii: "-")
            i = Hex.write(parentID, into: out, at: i + 1)
            out[i] = UInt8(ascii: "-")
            return Hex.write([flags], into: out, at: i + 1)
        }
    }
}

enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Writes `bytes` as lower-case hex at `at`; returns the next index.
    static func write(_ bytes: [UInt8], into out: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> Int {
        var i = start
        for b in bytes {
            out[i] = digits[Int(b >> 4)]
            out[i + 1] = digits[Int(b & 0xf)]
            i += 2
        }
        return i
    }

    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Lower-case hex only, as W3C requires.
    static func decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        guard text.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 2)
        var high: UInt8?
        for c in text {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        return out
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

    mutating func bytes(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            var v = next()
            if v == 0 { continue }
            for _ in 0..<min(8, count - out.count) {
                out.append(UInt8(truncatingIfNeeded: v))
                v >>= 8
            }
        }
        return out
    }

    /// A uniform draw in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
