import MeshgateHTTP2

/// A downstream connection as its loop keeps it: counted, drained
/// (GOAWAY, or no further exchange), closed when the drain times out.
/// `LoopContext.register`/`unregister` take any of them: the HTTP/2
/// connections and the gRPC-Web connections served over HTTP/1.1.
package protocol DrainableConnection: AnyObject {
    /// Calls under way (what the drain waits for).
    var activeCalls: Int { get }
    /// No new calls; the connection closes once its calls have ended.
    func beginDrain()
    /// Closes now (the drain timeout passed).
    func closeNow()
}

extension HTTP2Connection: DrainableConnection {
    package var activeCalls: Int { activeStreamCount }
    package func beginDrain() { beginGracefulShutdown() }
    package func closeNow() { close() }
}

extension GRPCWebHTTP1Handler: DrainableConnection {
    package var activeCalls: Int { hasExchange ? 1 : 0 }
    package func beginDrain() { beginGracefulShutdown() }
    package func closeNow() { close() }
}
