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

    let cluster: String
    private let generation: LoopGeneration
    private let pool: EndpointPool
    private var head: HTTP2HeaderList
    private let done: Done?
    private let user: UnsafeMutableRawPointer?
    private let started = NIODeadline.now()
    /// What to do at each event (`ShadowStreamStateMachine`); this class
    /// carries it out.
    private var machine: ShadowStreamStateMachine
    /// Its stream, while the machine is `.streaming`.
    private var upstream: (connection: HTTP2Connection, stream: Int32)?
    /// When the loop's sweep abandons it (`LoopContext.sweepShadows`).
    private(set) var deadline = NIODeadline.distantFuture
    /// Request bytes that arrived before the stream opened.
    private var pending: [ByteBuffer] = []
    private static let allocator = ByteBufferAllocator()
    private var requestTrailers: HTTP2HeaderList?
    private var loop: LoopContext?

    init(cluster: String, pool: EndpointPool, head: HTTP2HeaderList, requestEnded: Bool, generation: LoopGeneration,
         bufferLimit: Int, done: Done?, user: UnsafeMutableRawPointer?) {
        self.cluster = cluster
        self.pool = pool
        self.head = head
        self.generation = generation
        self.machine = ShadowStreamStateMachine(bufferLimit: bufferLimit, requestEnded: requestEnded)
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
        var queued = 0
        if let upstream { queued = upstream.connection.queuedBytes(stream: upstream.stream) }
        switch machine.requestData(bytes: data.readableBytes, queuedUpstream: queued) {
        case .hold:
            // It waits for a connection: its own storage, not the read
            // buffer it came in (the limit counts bytes, not buffers).
            pending.append(data.unpinned(allocator: Self.allocator))
        case .send:
            if let upstream { upstream.connection.send(data: data, stream: upstream.stream) }
        case .drop:
            break
        case .giveUp(let giveUp):
            carryOut(giveUp)
        }
    }

    /// The client's request ended (with trailers when it sent any).
    func endRequest(trailers: HTTP2HeaderList?) {
        switch machine.requestEnd(hasTrailers: trailers != nil) {
        case .ignore: break
        case .keepForStream: requestTrailers = trailers
        case .sendEnd: if let upstream { upstream.connection.sendEnd(stream: upstream.stream, trailers: trailers) }
        }
    }

    /// The client's stream closed: a shadow whose request is incomplete
    /// is given up (its upstream would wait for the rest forever).
    func clientClosed() {
        carryOut(machine.clientClosed())
    }

    /// The gateway stops: the shadow ends without telling its plugin.
    func abandonSilently() {
        carryOut(machine.silence())
    }

    /// Gives up on the shadow: CANCEL its stream, or leave the pool's queue.
    func abandon() {
        carryOut(machine.abandon())
    }

    private func carryOut(_ giveUp: ShadowStreamStateMachine.GiveUp) {
        switch giveUp {
        case .nothing:
            break
        case .leaveQueue:
            pool.cancelWait(self)
            finish()
        case .cancelStream:
            // The close callback finishes it.
            if let upstream { _ = upstream.connection.reset(stream: upstream.stream, errorCode: .cancel) }
        }
    }

    // MARK: From the pool

    func attach(_ connection: UpstreamConnection) {
        guard case .openStream(let endStream) = machine.connectionOffered(), let http2 = connection.http2 else { return }
        guard let stream = http2.openStream(headers: head, endStream: endStream, delegate: self) else {
            machine.streamNotOpened()
            // Later: the pool may attach inside call_start_shadow, and
            // `done` runs only after it returned.
            pool.loop.eventLoop.assumeIsolated().execute { self.finish() }
            return
        }
        head = HTTP2HeaderList()
        upstream = (http2, stream)
        let endAfterHeld = machine.streamOpened()
        pool.streamOpened()
        for chunk in pending { http2.send(data: chunk, stream: stream) }
        pending = []
        if endAfterHeld { http2.sendEnd(stream: stream, trailers: requestTrailers) }
    }

    func connectFailed(on endpoint: EndpointPool, error: String) {
        if machine.connectFailed() { finish() }
    }

    // MARK: HTTP2StreamDelegate (the shadow's upstream stream)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if let code = GRPCStatusCode(headers: headers) { machine.received(status: code) }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        // Read and dropped: the window goes back at once.
        connection.consume(stream: stream, bytes: data.readableBytes)
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        pool.streamClosed()
        ended(machine.streamClosed(reason))
    }

    // MARK: The end

    private func finish() {
        ended(machine.end())
    }

    private func ended(_ end: ShadowStreamStateMachine.End) {
        if end == .alreadyEnded { return }
        upstream = nil
        pending = []
        loop?.shadowEnded(self)
        if case .report(let result) = end, let done {
            var name = cluster
            name.withUTF8 { bytes in
                var result = mg_shadow_result(
                    size: UInt32(MemoryLayout<mg_shadow_result>.size), grpc_status: Int32(result.status.rawValue),
                    cluster: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                    latency_us: UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000)),
                    abandoned: result.abandoned ? 1 : 0, transport_failure: result.transportFailure ? 1 : 0, reserved: (0, 0, 0, 0, 0, 0))
                done(user, &result)
            }
        }
        generation.callEnded()
    }
}
