/// The `grpc-timeout` header: 1 to 8 ASCII digits followed by one unit
/// (H, M, S, m, u, n). Parsed without Foundation or allocation.
public enum GRPCTimeout {
    /// The largest value the header can carry in a unit.
    static let maxValue: Int64 = 99_999_999

    /// Returns the timeout in nanoseconds, or nil when the text is not a valid
    /// `grpc-timeout` value.
    public static func parse<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> Int64? {
        guard bytes.count >= 2, bytes.count <= 9 else { return nil }
        var value: Int64 = 0
        var index = bytes.startIndex
        let unitIndex = bytes.index(bytes.startIndex, offsetBy: bytes.count - 1)
        while index != unitIndex {
            let b = bytes[index]
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(b - UInt8(ascii: "0"))
            index = bytes.index(after: index)
        }
        let multiplier: Int64
        switch bytes[unitIndex] {
        case UInt8(ascii: "H"): multiplier = 3_600_000_000_000
        case UInt8(ascii: "M"): multiplier = 60_000_000_000
        case UInt8(ascii: "S"): multiplier = 1_000_000_000
        case UInt8(ascii: "m"): multiplier = 1_000_000
        case UInt8(ascii: "u"): multiplier = 1_000
        case UInt8(ascii: "n"): multiplier = 1
        default: return nil
        }
        let (result, didOverflow) = value.multipliedReportingOverflow(by: multiplier)
        return didOverflow ? Int64.max : result
    }

    public static func parse(_ text: String) -> Int64? {
        parse(Array(text.utf8))
    }

    /// Formats a remaining time for the upstream: the finest unit that fits in
    /// eight digits, rounding up so the upstream never sees a shorter deadline
    /// than the gateway enforces, and never zero.
    public static func format(nanoseconds: Int64) -> String {
        let ns = max(nanoseconds, 1)
        let units: [(Int64, Character)] = [
            (1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"),
            (60_000_000_000, "M"), (3_600_000_000_000, "H"),
        ]
        for (size, unit) in units {
            let value = (ns + size - 1) / size
            if value <= maxValue { return "\(value)\(unit)" }
        }
        return "\(maxValue)H"
    }
}
