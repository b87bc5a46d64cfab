import MeshgateHTTP2
import NIOCore

/// The client's side of a call as `ProxyCall` writes to it: an HTTP/2
/// stream of a gRPC client (the connection itself, `stream` naming the
/// stream), or a gRPC-Web call translated on the way (`GRPCWebStream`,
/// which ignores `stream`). A class-bound existential: calling through it
/// costs one indirect call and no allocation.
protocol CallClientStream: AnyObject {
    func sendResponseHeaders(stream: Int32, headers: HTTP2HeaderList, endStream: Bool)
    func send(data: ByteBuffer, stream: Int32)
    func sendEnd(stream: Int32, trailers: HTTP2HeaderList?)
    /// Window credit back to the client for request bytes passed on.
    func consume(stream: Int32, bytes: Int)
    /// Drops response bytes still queued for the client; returns how many.
    func discardQueuedData(stream: Int32) -> Int
    /// Counts bytes the call keeps against the client connection's cap and
    /// the process-wide budget, by kind (see `HTTP2Connection.holdBytes`
    /// and `holdSlice`); false, counting nothing, when there is no room.
    func holdBytes(_ bytes: Int, kind: HTTP2HoldKind) -> Bool
    func releaseHeldBytes(_ bytes: Int, kind: HTTP2HoldKind)
    func holdSlice(_ slice: ByteBuffer, kind: HTTP2HoldKind) -> HTTP2HeldSlice?
    func release(_ held: HTTP2HeldSlice)
    var remoteAddress: SocketAddress? { get }
}

extension HTTP2Connection: CallClientStream {}
