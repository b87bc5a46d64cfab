import FilterABI
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import NIOCore
import MeshgateUpstream

/// One shadow (mirrored) copy of a call (ABI 1.3 call_start_shadow): the
/// client's request, sent to another cluster, whose response is read and
/// dropped. Nothing of it reaches the call: the call only hands it request
/// bytes; the shadow never credits the client, never holds the call's
/// bytes beyond `bufferLimit` (then it gives up: RST_STREAM CANCEL), and
/// ends by itself (its deadline, which the loop's sweep enforces) however
/// slow its upstream is.
///
/// Lives on the call's event loop. Kept alive by whatever waits on it (the
/// pool's queue, the stream, the loop's table of shadows) and by the call until the call
/// ends; it keeps the call's generation (the plugin instances its `done`
/// callback may use) until it ended.
final class ShadowStream: HTTP2StreamDelegate, UpstreamPoolWaiter {
    typealias Done = @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<mg_shadow_result>?) -> Void

    private enum State {
        /// Waiting in the pool's queue for a connection.
        case waiting
        case streaming(HTTP2Connection, Int32)
        case ended
    }

    let cluster: String
    private let generation: LoopGeneration
    private let pool: EndpointPool
    private var head: HTTP2HeaderList
    private let bufferLimit: Int
    private let done: Done?
    private let user: UnsafeMutableRawPointer?
    private let started = NIODeadline.now()
    private var state = State.waiting
    /// When the loop's sweep abandons it (`LoopContext.sweepShadows`).
    private(set) var deadline = NIODeadline.distantFuture
    /// Request bytes that arrived before the stream opened.
    private var pending: [ByteBuffer] = []
    private static let allocator = ByteBufferAllocator()
    private var pendingBytes = 0
    private var requestEnded: Bool
    private var requestTrailers: HTTP2HeaderList?
    private var status: GRPCStatusCode?
    private var abandoned = false
    private var transportFailure = false
    /// At shutdown: the plugin's instances are about to go, so `done`
    /// must not run any more.
    private var silenced = false
    private var finished = false
    private var loop: LoopContext?

    init(cluster: String, pool: EndpointPool, head: HTTP2HeaderList, requestEnded: Bool, generation: LoopGeneration,
         bufferLimit: Int, done: Done?, user: UnsafeMutableRawPointer?) {
        self.cluster = cluster
        self.pool = pool
        self.head = head
        self.requestEnded = requestEnded
        self.generation = generation
        self.bufferLimit = bufferLimit
        self.done = done
        self.user = user
    }

    /// Queues the shadow on its endpoint and starts its clock.
    func start(timeout: TimeAmount, on loop: LoopContext) {
        self.loop = loop
        deadline = .now() + timeout
        loop.shadowStarted(self)
        generation.callStarted()
        pool.acquire(for: self)
    }

    // MARK: From the call

    /// Request bytes from the client (the same buffer the call sends on:
    /// shared, not copied).
    func forward(_ data: ByteBuffer) {
        switch state {
        case .waiting:
            pendingBytes += data.readableBytes
            guard pendingBytes <= bufferLimit else { return abandon() }
            // It waits for a connection: its own storage, not the read
            // buffer it came in (the limit counts bytes, not buffers).
            pending.append(data.unpinned(allocator: Self.allocator))
        case .streaming(let connection, let stream):
            guard connection.queuedBytes(stream: stream) + data.readableBytes <= bufferLimit else { return abandon() }
            connection.send(data: data, stream: stream)
        case .ended:
            break
        }
    }

    /// The client's request ended (with trailers when it sent any).
    func endRequest(trailers: HTTP2HeaderList?) {
        guard !requestEnded else { return }
        requestEnded = true
        requestTrailers = trailers
        if case .streaming(let connection, let stream) = state { connection.sendEnd(stream: stream, trailers: trailers) }
    }

    /// The client's stream closed: a shadow whose request is incomplete
    /// is given up (its upstream would wait for the rest forever).
    func clientClosed() {
        if !requestEnded { abandon() }
    }

    /// The gateway stops: the shadow ends without telling its plugin.
    func abandonSilently() {
        silenced = true
        abandon()
    }

    /// Gives up on the shadow: CANCEL its stream, or leave the pool's queue.
    func abandon() {
        guard !abandoned else { return }
        switch state {
        case .waiting:
            abandoned = true
            pool.cancelWait(self)
            finish()
        case .streaming(let connection, let stream):
            abandoned = true
            // The close callback finishes it.
            _ = connection.reset(stream: stream, errorCode: .cancel)
        case .ended:
            break
        }
    }

    // MARK: From the pool

    func attach(_ connection: UpstreamConnection) {
        guard case .waiting = state, let http2 = connection.http2 else { return }
        let endStream = requestEnded && pending.isEmpty && requestTrailers == nil
        guard let stream = http2.openStream(headers: head, endStream: endStream, delegate: self) else {
            transportFailure = true
            // Later: the pool may attach inside call_start_shadow, and
            // `done` runs only after it returned.
            state = .ended
            pool.loop.eventLoop.assumeIsolated().execute { self.finish() }
            return
        }
        head = HTTP2HeaderList()
        state = .streaming(http2, stream)
        pool.streamOpened()
        for chunk in pending { http2.send(data: chunk, stream: stream) }
        pending = []
        pendingBytes = 0
        if requestEnded && !endStream { http2.sendEnd(stream: stream, trailers: requestTrailers) }
    }

    func connectFailed(on endpoint: EndpointPool, error: String) {
        guard case .waiting = state else { return }
        transportFailure = true
        finish()
    }

    // MARK: HTTP2StreamDelegate (the shadow's upstream stream)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if let code = GRPCStatusCode(headers: headers) { status = code }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        // Read and dropped: the window goes back at once.
        connection.consume(stream: stream, bytes: data.readableBytes)
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        pool.streamClosed()
        switch reason {
        case .finished: break
        case .reset(let code, _):
            if status == nil, !abandoned {
                status = GRPCStatus(http2Error: code, context: "shadow").code
                transportFailure = true
            }
        case .connectionLost:
            if status == nil { transportFailure = true }
        case .headersTooLarge:
            if status == nil, !abandoned {
                status = .resourceExhausted
                transportFailure = true
            }
        }
        finish()
    }

    // MARK: The end

    private func finish() {
        guard !finished else { return }
        finished = true
        state = .ended
        pending = []
        let code: GRPCStatusCode = abandoned ? .cancelled : (status ?? (transportFailure ? .unavailable : .unknown))
        loop?.shadowEnded(self)
        if let done, !silenced {
            var name = cluster
            name.withUTF8 { bytes in
                var result = mg_shadow_result(
                    size: UInt32(MemoryLayout<mg_shadow_result>.size), grpc_status: Int32(code.rawValue),
                    cluster: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                    latency_us: UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000)),
                    abandoned: abandoned ? 1 : 0, transport_failure: transportFailure ? 1 : 0, reserved: (0, 0, 0, 0, 0, 0))
                done(user, &result)
            }
        }
        generation.callEnded()
    }
}
