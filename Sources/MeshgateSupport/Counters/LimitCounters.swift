import MeshgateGRPCCalls
import MeshgateHTTP2
import Synchronization

/// Counts of inputs the gateway refused or cut short because they passed a
/// limit (README "Limits"). They rise when someone sends too much — an
/// abusive client, a broken upstream — never per call of ordinary traffic,
/// so one relaxed atomic add each, from any loop, is cheap enough; shown on
/// /metrics.
public final class LimitCounters: Sendable {
    public static let shared = LimitCounters()

    /// Which side sent the header block.
    public enum Side: Int, CaseIterable, Sendable {
        /// A client (request heads and trailers, against the listener's limits).
        case downstream
        /// An upstream (response heads and trailers, against the cluster's).
        case upstream

        public var label: String { self == .downstream ? "downstream" : "upstream" }
    }

    /// An atomic in a box: `Atomic` cannot be copied into an array.
    private final class Cell: Sendable {
        public let value = Atomic<UInt64>(0)
    }

    /// What a call could not keep for lack of room in its client
    /// connection's cap or the global budget.
    public enum HeldBytes: Int, CaseIterable, Sendable {
        /// A new call's request head: the call was refused.
        case head
        /// Request bytes for a retry: the call stopped keeping them.
        case replay
        /// Request bytes waiting for an upstream stream: the call ended.
        case received

        public var label: String {
            switch self {
            case .head: "head"
            case .replay: "replay"
            case .received: "received"
            }
        }
    }

    private let headerBlocks = (0..<4).map { _ in Cell() }
    private let heldBytes = HeldBytes.allCases.map { _ in Cell() }
    private let ownService = GRPCServerCall.Refusal.allCases.map { _ in Cell() }

    private static func index(_ side: Side, _ violation: HTTP2HeaderLimitViolation) -> Int {
        switch violation {
        case .bytes: side.rawValue * 2
        case .fields: side.rawValue * 2 + 1
        }
    }

    public func headerBlockRefused(_ side: Side, _ violation: HTTP2HeaderLimitViolation) {
        headerBlocks[Self.index(side, violation)].value.add(1, ordering: .relaxed)
    }

    /// One of the gateway's own services (health, reflection) ended a
    /// request stream for passing a limit.
    public func ownServiceRefused(_ reason: GRPCServerCall.Refusal) {
        ownService[reason.rawValue].value.add(1, ordering: .relaxed)
    }

    public func heldBytesRefused(_ what: HeldBytes) {
        heldBytes[what.rawValue].value.add(1, ordering: .relaxed)
    }

    public struct Values: Sendable {
        /// Indexed as `index(side, violation)`.
        public var headerBlocks: [UInt64]
        public var ownService: [UInt64]
        public var heldBytes: [UInt64]
    }

    public func snapshot() -> Values {
        Values(headerBlocks: headerBlocks.map { $0.value.load(ordering: .relaxed) },
               ownService: ownService.map { $0.value.load(ordering: .relaxed) },
               heldBytes: heldBytes.map { $0.value.load(ordering: .relaxed) })
    }
}

extension LimitCounters.Values {
    public func write(to out: inout PrometheusWriter) {
        out.header("meshgate_header_limit_exceeded_total", "counter",
                   "Header blocks refused for passing a limit, by who sent them (downstream: the listener's max_request_headers_kb / max_headers_count; upstream: the cluster's) and which limit (bytes or fields).")
        for side in LimitCounters.Side.allCases {
            out.sample("meshgate_header_limit_exceeded_total", ["side": side.label, "limit": "bytes"], headerBlocks[side.rawValue * 2])
            out.sample("meshgate_header_limit_exceeded_total", ["side": side.label, "limit": "fields"], headerBlocks[side.rawValue * 2 + 1])
        }
        out.header("meshgate_own_service_refusals_total", "counter",
                   "Requests to the gateway's own services (health, reflection) ended for passing a limit, by reason.")
        for reason in GRPCServerCall.Refusal.allCases {
            out.sample("meshgate_own_service_refusals_total", ["reason": reason.label], ownService[reason.rawValue])
        }
        out.header("meshgate_held_bytes_refusals_total", "counter",
                   "Bytes a call could not keep for lack of room in its client connection's per_connection_buffer_limit_bytes or the global budget: a new call's head (the call refused), replay bytes (the call can no longer retry), received bytes waiting for an upstream stream (the call ended).")
        for what in LimitCounters.HeldBytes.allCases {
            out.sample("meshgate_held_bytes_refusals_total", ["kind": what.label], heldBytes[what.rawValue])
        }
    }
}

extension GRPCServerCall.Refusal {
    public var label: String {
        switch self {
        case .messageTooLarge: "message_too_large"
        case .tooManyMessages: "too_many_messages"
        case .connectionBufferFull: "connection_buffer_full"
        }
    }
}
