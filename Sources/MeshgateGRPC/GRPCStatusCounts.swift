/// A counter per gRPC status code (0...16), stored inline: counting, and
/// copying a series for a scrape, allocate nothing. Used wherever calls or
/// attempts are counted by status (`LoopMetrics`, `EndpointPool`, the
/// metrics and dashboard views over them).
///
/// The counting methods are `@inlinable`: the data path counts each call
/// and attempt from other modules, so the increment is compiled there.
public struct GRPCStatusCounts: Sendable, Equatable {
    /// One UInt64 per code, in code order.
    @usableFromInline
    internal var storage: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                           UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    @inlinable
    public init() {
        storage = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    }

    @inlinable
    public subscript(code: GRPCStatusCode) -> UInt64 {
        get {
            withUnsafeBytes(of: storage) { $0.load(fromByteOffset: code.rawValue &* 8, as: UInt64.self) }
        }
        set {
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: newValue, toByteOffset: code.rawValue &* 8, as: UInt64.self) }
        }
    }

    /// Counts one call (or attempt) that ended with `code`.
    @inlinable
    public mutating func record(_ code: GRPCStatusCode) {
        self[code] &+= 1
    }

    /// All codes together.
    public var total: UInt64 {
        GRPCStatusCode.allCases.reduce(0) { $0 &+ self[$1] }
    }

    /// Those that did not end OK.
    public var failed: UInt64 { total &- self[.ok] }

    /// The codes counted at least once, in code order.
    public var nonZero: [(code: GRPCStatusCode, count: UInt64)] {
        GRPCStatusCode.allCases.compactMap { self[$0] > 0 ? ($0, self[$0]) : nil }
    }

    /// Adds `other`'s counts (another loop's, for a scrape).
    public mutating func add(_ other: GRPCStatusCounts) {
        for code in GRPCStatusCode.allCases { self[code] &+= other[code] }
    }

    /// What was counted since `earlier`, per code; a count lower than
    /// `earlier`'s restarted (a pool or series made anew) and counts in
    /// full.
    public func since(_ earlier: GRPCStatusCounts) -> GRPCStatusCounts {
        var delta = self
        for code in GRPCStatusCode.allCases where self[code] >= earlier[code] { delta[code] = self[code] - earlier[code] }
        return delta
    }

    public static func == (a: GRPCStatusCounts, b: GRPCStatusCounts) -> Bool {
        GRPCStatusCode.allCases.allSatisfy { a[$0] == b[$0] }
    }
}
