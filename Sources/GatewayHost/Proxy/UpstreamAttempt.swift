import MeshgateHTTP2
import NIOCore
import MeshgateCallCore
import MeshgateUpstream

/// The I/O side of one attempt of a call: its place in an endpoint pool,
/// its connection and its upstream stream. It turns pool and stream
/// callbacks into `CallEvent`s for its call and carries out what the call
/// asks of the stream; what the attempt *means* (committed, cancelled,
/// reported) is the call's state machine's (`AttemptState`).
///
/// The `mg_attempt *` handle plugins get points at this object.
final class UpstreamAttempt: HTTP2StreamDelegate, UpstreamPoolWaiter {
    /// Strong: a waiting or streaming attempt keeps its call alive; the
    /// call lets its attempts go once it is done.
    let call: ProxyCall
    let id: AttemptID
    let started = NIODeadline.now()

    private(set) var pool: EndpointPool?
    /// The chosen endpoint's index in the call's generation's cluster (for
    /// metadata), and the balancers' id for it.
    private(set) var endpointIndex = -1
    private(set) var endpointID: UInt64 = 0
    private var connection: HTTP2Connection?
    private var stream: Int32 = 0
    private var hasStream = false

    /// Headers the filters add in on_attempt_start (attempt_set_request_header),
    /// which only works while `acceptsRequestHeaders`; they replace the
    /// client's and the gateway's fields of the same names.
    var extraRequestHeaders = HTTP2HeaderList()
    var acceptsRequestHeaders = false

    init(call: ProxyCall, id: AttemptID) {
        self.call = call
        self.id = id
    }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ handle: OpaquePointer?) -> UpstreamAttempt {
        Unmanaged<UpstreamAttempt>.fromOpaque(UnsafeRawPointer(handle!)).takeUnretainedValue()
    }

    /// "host:port" of the endpoint it was placed on ("" before).
    var address: String { pool?.address ?? "" }

    /// `:scheme` of its request.
    var scheme: String { pool?.scheme ?? "http" }

    // MARK: Carried out for the call

    /// The balancer chose `pool`; the attempt waits there for a connection
    /// (`attach`, or `connectFailed`).
    func place(on pool: EndpointPool, index: Int, endpointID: UInt64) {
        self.pool = pool
        self.endpointIndex = index
        self.endpointID = endpointID
        connection = nil
        pool.acquire(for: self)
    }

    func abandonWait() {
        pool?.cancelWait(self)
    }

    /// Opens the upstream stream; false when the connection cannot take it.
    func openStream(headers: HTTP2HeaderList, endStream: Bool) -> Bool {
        guard let connection, let stream = connection.openStream(headers: headers, endStream: endStream, delegate: self) else {
            return false
        }
        self.stream = stream
        hasStream = true
        pool?.streamOpened()
        return true
    }

    func send(_ data: ByteBuffer) { connection?.send(data: data, stream: stream) }

    func sendEnd(trailers: HTTP2HeaderList?) { connection?.sendEnd(stream: stream, trailers: trailers) }

    func reset(_ code: HTTP2ErrorCode) { connection?.reset(stream: stream, errorCode: code) }

    /// Window credit back to the upstream for response bytes passed on.
    func credit(bytes: Int) { connection?.consume(stream: stream, bytes: bytes) }

    // MARK: From the endpoint pool

    func attach(_ connection: UpstreamConnection) {
        self.connection = connection.http2
        call.handle(.connectionReady(id))
    }

    func connectFailed(on endpoint: EndpointPool, error: String) {
        call.handle(.connectFailed(id))
    }

    // MARK: HTTP2StreamDelegate (the upstream stream)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        call.handle(.attemptHeaders(id, headers, isTrailers: isTrailers, endStream: endStream))
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        call.handle(.attemptData(id, data))
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        call.handle(.attemptEnd(id))
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        call.handle(.attemptWrote(id, bytes: bytes))
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        if hasStream {
            hasStream = false
            pool?.streamClosed()
        }
        call.handle(.attemptClosed(id, reason))
    }
}
