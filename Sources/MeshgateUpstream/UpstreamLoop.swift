import MeshgateDiscovery
import MeshgateHTTP2
import NIOCore

/// What an upstream pool needs from the event loop it belongs to: the loop
/// itself, the loop's write batch (upstream and client connections flush
/// together), the process-wide buffer budget and the addresses no upstream
/// may resolve to. A value made once per loop when the loop is wired
/// (`LoopContext`), so the pools know nothing else of the loop.
public struct UpstreamLoop {
    public let eventLoop: EventLoop
    public let writeBatch: HTTP2WriteBatch
    public let bufferBudget: HTTP2BufferBudget
    public let ownAddresses: GatewayOwnAddresses

    public init(eventLoop: EventLoop, writeBatch: HTTP2WriteBatch, bufferBudget: HTTP2BufferBudget, ownAddresses: GatewayOwnAddresses) {
        self.eventLoop = eventLoop
        self.writeBatch = writeBatch
        self.bufferBudget = bufferBudget
        self.ownAddresses = ownAddresses
    }
}
