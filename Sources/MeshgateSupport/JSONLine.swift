import MeshgatePosix

/// One JSON object on one line, written into a reused byte buffer: keys in
/// the order given, strings escaped as RFC 8259 requires.
public struct JSONLine {
    public private(set) var bytes: [UInt8] = []

    public init() { bytes.reserveCapacity(1024) }

    /// `{"ts":<seconds.millis>,"level":"info","msg":"<message>"`
    public mutating func start(message: StaticString) {
        bytes.removeAll(keepingCapacity: true)
        let now = Posix.wallClockNanos()
        append("{\"ts\":")
        appendInt(now / 1_000_000_000)
        bytes.append(UInt8(ascii: "."))
        appendPadded(UInt64(now / 1_000_000 % 1000), digits: 3)
        append(",\"level\":\"info\",\"msg\":\"")
        message.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func end() { append("}\n") }

    public mutating func field(_ key: String, string value: String) {
        appendKey(key)
        quote(value.utf8)
    }

    public mutating func field(_ key: String, string value: Substring) {
        appendKey(key)
        quote(value.utf8)
    }

    public mutating func field(_ key: String, int value: Int64) {
        appendKey(key)
        appendInt(value)
    }

    /// `value / 1000` with three decimals (microseconds as milliseconds).
    public mutating func field(_ key: String, thousandths value: Int64) {
        appendKey(key)
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        appendDigits(value.magnitude / 1000)
        bytes.append(UInt8(ascii: "."))
        appendPadded(value.magnitude % 1000, digits: 3)
    }

    private mutating func appendKey(_ key: String) {
        bytes.append(UInt8(ascii: ","))
        quote(key.utf8)
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func append(_ text: StaticString) { text.withUTF8Buffer { bytes.append(contentsOf: $0) } }

    private mutating func quote<S: Sequence>(_ utf8: S) where S.Element == UInt8 {
        bytes.append(UInt8(ascii: "\""))
        for b in utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case UInt8(ascii: "\n"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                append("\\u00")
                appendPadded(UInt64(b), digits: 2, radix: 16)
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func appendInt(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        appendDigits(value.magnitude)
    }

    private mutating func appendDigits(_ value: UInt64) {
        var v = value
        var digits = 1
        while v >= 10 { v /= 10; digits += 1 }
        appendPadded(value, digits: digits)
    }

    /// The low `digits` digits of `value`, zero-padded.
    private mutating func appendPadded(_ value: UInt64, digits: Int, radix: UInt64 = 10) {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: digits))
        var v = value
        var i = start + digits - 1
        while i >= start {
            let d = UInt8(v % radix)
            bytes[i] = d < 10 ? UInt8(ascii: "0") + d : UInt8(ascii: "a") + d - 10
            v /= radix
            i -= 1
        }
    }
}
