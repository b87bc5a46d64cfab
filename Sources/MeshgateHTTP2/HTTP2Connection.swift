internal import CFreeListAllocator
internal import CNGHTTP2
import NIOCore

/// One HTTP/2 connection, server or client side, driven by nghttp2 and fed by
/// a NIO channel. This type (with its `+Callbacks` extension) is the only
/// place Meshgate calls nghttp2.
///
/// nghttp2 does the framing, HPACK and flow-control bookkeeping; this handler
/// moves bytes between the socket and nghttp2 and turns nghttp2's callbacks
/// into delegate calls. Inbound window updates are manual
/// (`NO_AUTO_WINDOW_UPDATE`): the receiver calls `consume(stream:bytes:)` once
/// it has passed bytes on, which is how a slow reader on one side of a proxy
/// back-pressures the other side.
///
/// Everything runs on the channel's event loop; nothing here is thread-safe.
public final class HTTP2Connection: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public enum Role: Sendable { case server, client }

    public let role: Role
    public let settings: HTTP2Settings
    /// Kept strongly until the connection closes.
    public var delegate: HTTP2ConnectionDelegate?

    /// Why the connection ended, when it ended on an error.
    public var closeReason: String? { closeCause?.reason }
    var closeCause: HTTP2CloseCause?
    /// Where the connection is in its life (see HTTP2ConnectionLifecycle).
    var lifecycle = HTTP2ConnectionLifecycle()
    /// Our PING is out and its ACK has not come back.
    var awaitingPingAck = false
    /// `startKeepalive`'s pinger; stopped and dropped when the connection ends.
    var keepalive: KeepalivePinger?
    /// With `settings.sendTimeout`: resets streams whose sending stalls.
    var sendStallWatch: SendStallWatch?
    /// The peer broke the protocol (bad preface, invalid frames), as
    /// opposed to an ordinary disconnect.
    public var closedForProtocolError: Bool {
        if case .protocolError = closeCause { return true }
        return false
    }
    /// Outbound bytes queued on all streams (see settings.maxQueuedBytes).
    var queuedBytes = 0
    /// Bytes the owner keeps for this connection's streams (`holdBytes`:
    /// request heads, a proxy's replay buffers), counted with `queuedBytes`
    /// against the connection's cap and the budget; `receivedHeldBytes`
    /// (`.received`) against the budget only; `heldStorages`: the read
    /// buffers kept slices pin, each counted once (see
    /// HTTP2Connection+Holding).
    public internal(set) var heldBytes = 0
    public internal(set) var receivedHeldBytes = 0
    var heldStorages = HeldStorageLedger()
    /// `queuedBytes` when the budget was last settled (after a flush): a
    /// hold reserves for what persists, not for bytes about to leave.
    var settledQueuedBytes = 0
    /// Chunks queued since the last flush that pin a larger storage (see
    /// `ByteBuffer.pinsLargerStorage`); those still queued after the flush
    /// get storage of their own (`unpinWaitingQueues`).
    private var pinningChunks = 0
    /// What this connection holds of `settings.bufferBudget`: a multiple of
    /// its granule, at least `queuedBytes` after each flush.
    var budgetReserved = 0
    /// The channel closed; streams and the delegate were let go.
    public var isClosed: Bool { lifecycle.isClosed }
    /// The peer sent GOAWAY: open no new streams here.
    public var receivedGoAway: Bool { lifecycle.receivedGoAway }
    /// We are draining: GOAWAY has been (or is about to be) sent.
    public var isShuttingDown: Bool { lifecycle.isShuttingDown }

    var session: OpaquePointer?
    var context: ChannelHandlerContext?
    var streams = StreamTable()
    /// Strings for received header values that repeat (see cachedString).
    var headerStrings = HeaderStringCache()
    /// The buffer nghttp2 is reading, and its readable bytes, during
    /// `nghttp2_session_mem_recv`: DATA payloads point into it, so they are
    /// handed on as slices of it instead of copies (see onDataChunk).
    var input: ByteBuffer?
    var inputBytes: UnsafeRawBufferPointer?
    /// States of closed streams, ready for new ones, when there is no
    /// write batch to keep them for the whole loop (at most four).
    private var spareStreamStates: [StreamState] = []
    /// Client side: an emptied header list for the next response head or
    /// trailers (see onFrameReceived).
    var spareHeaders: HTTP2HeaderList?
    /// Server side: the checks of the client's frames nghttp2 leaves to us.
    var framePolicy: HTTP2InboundFramePolicy
    /// The last flush's output buffer, filled again by the next flush: once
    /// the socket has taken its bytes nobody else holds it, and `clear()`
    /// keeps its storage. Kept only while small (idle connections stay small).
    private var spareOutput: ByteBuffer?
    private var inRead = false
    private var inSend = false
    private var flushScheduled = false
    /// Server side: streams whose response ended (END_STREAM submitted)
    /// while the client had not ended its request. Once the end is on the
    /// wire they are reset with NO_ERROR (RFC 9113 §8.1, as grpc-go does),
    /// so a client that never ends its requests cannot pile streams up.
    var endedWithRequestOpen: [Int32] = []
    /// Write credits and closes seen while nghttp2 is producing output are
    /// delivered after `mem_send` returns, so that delegates may call back
    /// into this connection safely.
    var pendingCredits: [(state: StreamState, bytes: Int)] = []
    var pendingCloses: [(state: StreamState, reason: HTTP2StreamCloseReason)] = []
    /// Spare storage swapped with the pending lists while delivering them,
    /// so that steady traffic allocates no new arrays.
    private var deliveringCredits: [(state: StreamState, bytes: Int)] = []
    private var deliveringCloses: [(state: StreamState, reason: HTTP2StreamCloseReason)] = []

    /// Shared by the connections of one event loop; nil flushes each
    /// connection on its own.
    let writeBatch: HTTP2WriteBatch?

    public init(role: Role, settings: HTTP2Settings = HTTP2Settings(), writeBatch: HTTP2WriteBatch? = nil, delegate: HTTP2ConnectionDelegate?) {
        self.role = role
        self.settings = settings
        self.writeBatch = writeBatch
        self.delegate = delegate
        self.framePolicy = HTTP2InboundFramePolicy(maxConsecutiveEmptyFrames: settings.maxConsecutiveEmptyFrames,
                                                   maxInvalidFrames: settings.maxInvalidFrames)
    }

    deinit {
        if let session { nghttp2_session_del(session) }
    }

    // MARK: State visible to owners

    public var eventLoop: EventLoop? { context?.eventLoop }

    /// A String for received header bytes that repeat on this connection
    /// (a request's `:path`), reusing the one made for the same bytes
    /// before (see HeaderStringCache): header lists keep bytes, and only
    /// what the gateway must read as text becomes a String.
    public func cachedString(_ bytes: UnsafeRawBufferPointer) -> String {
        headerStrings.string(bytes.bindMemory(to: UInt8.self))
    }

    /// Streams open on this connection.
    public var activeStreamCount: Int { streams.count }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 assumes 100 until
    /// the peer's SETTINGS arrive).
    public var remoteMaxConcurrentStreams: Int {
        guard let session else { return 0 }
        return Int(nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
    }

    /// True while new streams may be opened here.
    public var canOpenStreams: Bool { lifecycle.canOpenStreams }

    public var remoteAddress: SocketAddress? { context?.channel.remoteAddress }

    // MARK: Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        createSession()
        // A client may queue requests before the TCP connect completes; its
        // SETTINGS must be the first frame, so they are submitted now.
        if role == .client, lifecycle.queueSettings() { submitSettings() }
        if context.channel.isActive && role == .client { start() }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        // A connect that failed never fires channelInactive: end here too,
        // so streams and the delegate are released exactly once.
        connectionDidEnd()
        self.context = nil
    }

    public func channelActive(context: ChannelHandlerContext) {
        // A server speaks only after the client's first bytes: an HTTP/1.1
        // client, turned away by the `HTTPVersionGate` in front of this
        // handler, gets a plain HTTP/1.1 answer and no SETTINGS.
        if role == .client { start() }
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        connectionDidEnd()
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session, lifecycle.readsInput else { return }
        let buffer = unwrapInboundIn(data)
        if role == .server, lifecycle.phase == .idle { start() }
        inRead = true
        input = buffer
        let result = buffer.withUnsafeReadableBytes { bytes in
            inputBytes = bytes
            defer { inputBytes = nil }
            return nghttp2_session_mem_recv(session, bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count)
        }
        input = nil
        inRead = false
        if result < 0 {
            failConnection(code: Int32(truncatingIfNeeded: result))
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // With a write batch, the frames this read produced go out with
        // the rest of the loop's output, at the end of its wake-up.
        if writeBatch != nil { scheduleFlush() } else { flush() }
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flush() }
        context.fireChannelWritabilityChanged()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        if closeCause == nil { closeCause = .error("\(error)") }
        context.close(promise: nil)
    }

    // MARK: Opening and answering streams

    /// Client side: opens a stream with the request head. With `endStream`
    /// false, body bytes follow through `send(data:)` and `sendEnd`.
    /// Returns the stream id, or nil when the connection cannot take it.
    public func openStream(headers: HTTP2HeaderList, endStream: Bool, delegate: HTTP2StreamDelegate) -> Int32? {
        guard role == .client, let session, canOpenStreams else { return nil }
        let state = makeStreamState(id: 0, delegate: delegate)
        state.keepSentHead(headers)
        let id: Int32 = withNameValuePairs(state.sentHead) { nva, count in
            if endStream {
                return nghttp2_submit_request(session, nil, nva, count, nil, nil)
            }
            var provider = HTTP2Connection.dataProvider
            return nghttp2_submit_request(session, nil, nva, count, &provider, nil)
        }
        guard id > 0 else { return nil }
        state.assign(id: id)
        state.sending = endStream ? .ended : .body
        streams[id] = state
        scheduleFlush()
        return id
    }

    /// Server side: sends the response head. `endStream` true makes it a
    /// Trailers-Only response (one HEADERS frame with END_STREAM).
    public func sendResponseHeaders(stream id: Int32, headers: HTTP2HeaderList, endStream: Bool) {
        guard role == .server, let session, let state = streams[id], state.sending == .idle else { return }
        state.keepSentHead(headers)
        let rv: Int32 = withNameValuePairs(state.sentHead) { nva, count in
            if endStream {
                return nghttp2_submit_response(session, id, nva, count, nil)
            }
            var provider = HTTP2Connection.dataProvider
            return nghttp2_submit_response(session, id, nva, count, &provider)
        }
        if rv == 0 {
            state.sending = endStream ? .ended : .body
            if endStream && state.receiving != .ended { endedWithRequestOpen.append(id) }
        } else {
            // Refused (nghttp2 closed the stream, or will): nothing follows.
            state.sending = .ended
        }
        scheduleFlush()
    }

    /// Queues body bytes. They leave as the peer's flow-control window allows;
    /// `didWriteData` reports each part that left.
    public func send(data: ByteBuffer, stream id: Int32) {
        guard let state = streams[id], state.sending.takesBody else { return }
        state.outboundBytes += data.readableBytes
        queuedBytes += data.readableBytes
        if settings.maxQueuedBytes > 0 && queuedBytes + heldBytes > settings.maxQueuedBytes {
            // Past the connection's cap (queued and held bytes together):
            // this stream's queue goes (it is the one growing), not the
            // memory. (`reset` drops what it counts.)
            reset(stream: id, errorCode: .enhanceYourCalm)
            return
        }
        if settings.sendTimeout > .zero, let loop = context?.eventLoop {
            if sendStallWatch == nil { sendStallWatch = SendStallWatch(connection: self, timeout: settings.sendTimeout) }
            sendStallWatch!.arm(on: loop)
        }
        // A slice of a read buffer is queued as it is: most leave in this
        // wake-up's flush, and those still here after it get storage of
        // their own then (`unpinWaitingQueues`). Copying at once would hold
        // every byte read in a wake-up twice until the flush.
        if data.pinsLargerStorage { pinningChunks += 1 }
        state.outbound.append(data)
        resumeIfDeferred(state)
    }

    /// Ends our side of the stream after the queued data: with trailers (a
    /// final HEADERS frame) or, when `trailers` is nil, END_STREAM on DATA.
    public func sendEnd(stream id: Int32, trailers: HTTP2HeaderList?) {
        guard let state = streams[id], state.sending.takesBody else { return }
        let deferred = state.sending == .bodyDeferred
        state.sending = .ending
        state.keepTrailers(trailers)
        if deferred, let session { nghttp2_session_resume_data(session, id) }
        scheduleFlush()
    }

    /// Drops data queued for the peer but not yet sent (before a final status
    /// that must not wait behind it). Returns the number of bytes dropped.
    @discardableResult
    public func discardQueuedData(stream id: Int32) -> Int {
        guard let state = streams[id] else { return 0 }
        let dropped = state.outboundBytes
        state.outbound.removeAll()
        state.outboundBytes = 0
        queuedBytes -= dropped
        return dropped
    }

    /// Bytes queued on `stream` and not yet handed to the wire.
    public func queuedBytes(stream id: Int32) -> Int {
        streams[id]?.outboundBytes ?? 0
    }

    /// Sends RST_STREAM and drops the data still queued for the peer,
    /// returning its size (a proxy gives that much window back on the other
    /// side). The delegate still gets `didCloseWith`.
    @discardableResult
    public func reset(stream id: Int32, errorCode: HTTP2ErrorCode) -> Int {
        guard let session, let state = streams[id] else { return 0 }
        state.sending = .reset
        let dropped = state.outboundBytes
        state.outbound.removeAll()
        state.outboundBytes = 0
        queuedBytes -= dropped
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, errorCode.rawValue)
        scheduleFlush()
        return dropped
    }

    /// Hands `bytes` of received DATA back to the peer as window credit.
    public func consume(stream id: Int32, bytes: Int) {
        guard let session, let state = streams[id], bytes > 0 else { return }
        let n = min(bytes, state.unconsumed)
        guard n > 0 else { return }
        state.unconsumed -= n
        nghttp2_session_consume(session, id, n)
        scheduleFlush()
    }

    // MARK: Shutdown

    /// Server side graceful shutdown: a GOAWAY announcing shutdown at once,
    /// then after `finalGoAwayDelay` (one round trip is enough; in-flight
    /// HEADERS get through) a GOAWAY with the last stream actually accepted.
    /// The connection closes by itself once its streams are done.
    public func beginGracefulShutdown(finalGoAwayDelay: TimeAmount = .milliseconds(500)) {
        guard let session, let context else { return }
        switch lifecycle.beginGracefulShutdown() {
        case .none: return
        case .close: return close()
        case .sendGoAway: break
        }
        if role == .server {
            nghttp2_submit_shutdown_notice(session)
            scheduleFlush()
            context.eventLoop.assumeIsolated().scheduleTask(in: finalGoAwayDelay) {
                self.sendFinalGoAway()
            }
        } else {
            sendFinalGoAway()
        }
    }

    private func sendFinalGoAway() {
        guard let session, !lifecycle.isClosed else { return }
        let last = nghttp2_session_get_last_proc_stream_id(session)
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
        flush()
    }

    /// Sends a PING; the keepalive hears of its ACK. One PING at a time:
    /// false (and nothing sent) while one is outstanding or the connection
    /// is closed.
    func sendPing() -> Bool {
        guard let session, !lifecycle.isClosed, !awaitingPingAck else { return false }
        guard nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil) == 0 else { return false }
        awaitingPingAck = true
        scheduleFlush()
        return true
    }

    /// Keepalive (a cluster's or a listener's `keepalive:`): a PING every
    /// `interval`; when its ACK does not come within `timeout`, `onTimeout`
    /// hears why and the connection closes (its streams see a lost
    /// connection). It stops by itself when the connection ends. On the
    /// connection's loop; a second call replaces the first.
    public func startKeepalive(interval: TimeAmount, timeout: TimeAmount, onTimeout: @escaping (_ reason: String) -> Void) {
        guard !lifecycle.isClosed else { return }
        keepalive?.stop()
        keepalive = KeepalivePinger(connection: self, interval: interval, timeout: timeout, onTimeout: onTimeout)
        keepalive?.start()
    }

    /// Closes the TCP connection now, saying why; open streams see `connectionLost`.
    public func close(reason: String) {
        if closeCause == nil { closeCause = .error(reason) }
        close()
    }

    /// Closes the TCP connection now; open streams see `connectionLost`.
    public func close() {
        guard let context, lifecycle.closeRequested() else { return }
        context.eventLoop.assumeIsolated().execute {
            context.close(promise: nil)
        }
    }

    // MARK: Internals

    private func createSession() {
        guard session == nil else { return }
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        HTTP2Connection.installCallbacks(callbacks)

        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_auto_window_update(option, 1)
        // Keep nghttp2's default checks of header fields (RFC 9113 §8.2.1).
        // What we may send is not what we accept: a listener that takes 8 KiB
        // heads still relays its clusters' larger response heads.
        nghttp2_option_set_max_send_header_block_length(option, max(Int(settings.maxHeaderListSize) * 2, 128 << 10))
        nghttp2_option_set_max_outbound_ack(option, settings.maxOutboundAcks)
        nghttp2_option_set_max_settings(option, settings.maxSettingsEntries)
        nghttp2_option_set_stream_reset_rate_limit(option, settings.streamResetBurst, settings.streamResetRate)
        nghttp2_option_set_max_continuations(option, settings.maxContinuations)

        let userData = Unmanaged.passUnretained(self).toOpaque()
        // nghttp2 allocates stream structs, outbound items, header copies and
        // frame buffers per stream on both sessions of every RPC: per-thread
        // free lists (the connection's event loop is one thread) serve them
        // without libc. The session copies this struct.
        var memory = nghttp2_mem(mem_user_data: nil, malloc: mg_fl_malloc, free: mg_fl_free,
                                 calloc: mg_fl_calloc, realloc: mg_fl_realloc)
        var newSession: OpaquePointer?
        switch role {
        case .server: nghttp2_session_server_new3(&newSession, callbacks, userData, option, &memory)
        case .client: nghttp2_session_client_new3(&newSession, callbacks, userData, option, &memory)
        }
        session = newSession
    }

    private func start() {
        switch lifecycle.start() {
        case .none: return
        case .submitSettingsAndFlush: submitSettings()
        case .flush: break
        }
        flush()
    }

    /// Once, when the lifecycle says so (`queueSettings`, `start`).
    private func submitSettings() {
        guard let session else { return }
        var entries: [nghttp2_settings_entry] = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: settings.initialStreamWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: settings.maxHeaderListSize),
        ]
        switch role {
        case .server:
            entries.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: settings.maxConcurrentStreams))
        case .client:
            entries.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(clamping: settings.connectionWindowSize))
    }

    private func resumeIfDeferred(_ state: StreamState) {
        if state.sending == .bodyDeferred, let session {
            state.sending = .body
            nghttp2_session_resume_data(session, state.id)
        }
        scheduleFlush()
    }

    /// Output is produced once per batch: with a write batch, once per
    /// wake-up of the loop (see HTTP2WriteBatch); without one, at the end
    /// of this connection's read, or in one task queued on the loop for
    /// sends made outside a read.
    func scheduleFlush() {
        if flushScheduled || lifecycle.isClosed { return }
        guard let context else { return }
        if let writeBatch {
            flushScheduled = true
            writeBatch.markDirty(self, on: context.eventLoop)
            return
        }
        if inRead { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flush()
        }
    }

    /// Moves what nghttp2 wants to send into the channel while the channel
    /// accepts writes; stops (keeping data queued per stream, so flow
    /// control holds the peers back) when the socket is saturated.
    func flush() {
        flushScheduled = false
        guard let session, let context, !inSend, lifecycle.hasStarted else { return }
        inSend = true
        var wrote = false
        var failure: Int = 0
        while context.channel.isWritable {
            var out: ByteBuffer?
            while (out?.readableBytes ?? 0) < 64 * 1024 {
                var chunk: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(session, &chunk)
                if n < 0 { failure = n; break }
                if n == 0 { break }
                if out == nil {
                    if var spare = spareOutput.take() {
                        spare.clear()
                        out = spare
                    } else {
                        out = context.channel.allocator.buffer(capacity: max(n, 1024))
                    }
                }
                out!.writeBytes(UnsafeRawBufferPointer(start: chunk, count: n))
            }
            guard let out else { break }
            context.write(wrapOutboundOut(out), promise: nil)
            if out.capacity <= 4096 { spareOutput = out }
            wrote = true
            if failure != 0 { break }
        }
        inSend = false
        if wrote { context.flush() }
        if !endedWithRequestOpen.isEmpty { resetStreamsEndedWithRequestOpen(session) }
        deliverPendingEvents()
        settledQueuedBytes = queuedBytes
        // Integers first: the budget (a class, retained when read) is
        // touched only when the share must change.
        if countedQueuedBytes > budgetReserved || budgetReserved - countedQueuedBytes >= HTTP2BufferBudget.granule,
           !lifecycle.isClosed, let budget = settings.bufferBudget {
            settleBufferBudget(budget)
        }
        // After the budget had its say: the queues it reset are not copied.
        if pinningChunks > 0 {
            if queuedBytes > 0 { unpinWaitingQueues(context.channel.allocator) }
            pinningChunks = 0
        }
        if failure != 0 {
            closeCause = closeCause ?? .error("nghttp2: \(String(cString: nghttp2_strerror(Int32(truncatingIfNeeded: failure))))")
            close()
            return
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            close()
        }
    }

    /// The queued bytes this connection must hold a share for: all but its
    /// first granule. Counting that one too would let many connections
    /// with a few bytes each (rounded up to a granule apiece) use up the
    /// budget while almost nothing is queued; uncounted, the cap can be
    /// passed by at most a granule per connection, as documented.
    var countedQueuedBytes: Int { max(queuedBytes + heldBytes + receivedHeldBytes - HTTP2BufferBudget.granule, 0) }

    /// Brings this connection's share of the process-wide budget in line
    /// with what is still queued after a flush: more when the queues grew
    /// past it; when the budget has no more, the largest queues are reset
    /// (ENHANCE_YOUR_CALM, their bytes dropped) until the rest fits. A
    /// share a granule or more above the queues goes back.
    private func settleBufferBudget(_ budget: HTTP2BufferBudget) {
        let granule = HTTP2BufferBudget.granule
        while countedQueuedBytes > budgetReserved {
            let need = (countedQueuedBytes - budgetReserved + granule - 1) / granule * granule
            if budget.reserve(need) {
                budgetReserved += need
                return
            }
            var largest: StreamState?
            for state in streams.values where state.outboundBytes > (largest?.outboundBytes ?? 0) { largest = state }
            guard let largest else { return }
            reset(stream: largest.id, errorCode: .enhanceYourCalm)
        }
        if budgetReserved - countedQueuedBytes >= granule {
            let keep = (countedQueuedBytes + granule - 1) / granule * granule
            budget.release(budgetReserved - keep)
            budgetReserved = keep
        }
    }

    /// Slices of read buffers that are still queued after a flush wait for
    /// the peer's window: each gets storage of its own, so that what waits
    /// costs its bytes, not the buffers it came in (the caps count bytes).
    /// Only after a flush that left bytes queued and had such a slice
    /// queued: a proxy whose peers read never comes here.
    private func unpinWaitingQueues(_ allocator: ByteBufferAllocator) {
        streams.forEachState { state in
            if state.outboundBytes > 0 { state.outbound.unpin(allocator: allocator) }
        }
    }

    /// RST_STREAM(NO_ERROR) for each stream of `endedWithRequestOpen` whose
    /// END_STREAM has left and whose request is still open; the others wait
    /// for a later flush (their end is still queued behind data).
    private func resetStreamsEndedWithRequestOpen(_ session: OpaquePointer) {
        var waiting = 0
        for id in endedWithRequestOpen {
            guard let state = streams[id], state.receiving != .ended else { continue }
            if nghttp2_session_get_stream_local_close(session, id) == 1 {
                nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_NO_ERROR.rawValue))
                scheduleFlush()
            } else {
                endedWithRequestOpen[waiting] = id
                waiting += 1
            }
        }
        endedWithRequestOpen.removeLast(endedWithRequestOpen.count - waiting)
    }

    private func deliverPendingEvents() {
        while !pendingCredits.isEmpty || !pendingCloses.isEmpty {
            swap(&pendingCredits, &deliveringCredits)
            for credit in deliveringCredits {
                // The state, not a lookup: the stream may have closed in the
                // same mem_send, and its last bytes still count.
                credit.state.delegate?.http2(self, stream: credit.state.id, didWriteData: credit.bytes)
            }
            deliveringCredits.removeAll(keepingCapacity: true)
            swap(&pendingCloses, &deliveringCloses)
            for (state, reason) in deliveringCloses {
                notifyClosed(state, reason: reason)
            }
            while !deliveringCloses.isEmpty {
                var state = deliveringCloses.removeLast().state
                recycle(&state)
            }
        }
    }

    /// A stream's state from the spares, or a new one.
    func makeStreamState(id: Int32, delegate: HTTP2StreamDelegate?) -> StreamState {
        if let spare = writeBatch?.spareStreamStates.popLast() ?? spareStreamStates.popLast() {
            spare.reuse(id: id, delegate: delegate)
            return spare
        }
        return StreamState(id: id, delegate: delegate)
    }

    /// Keeps a closed stream's state for the next stream, if nothing else
    /// refers to it (a late credit or close entry would otherwise reach the
    /// new stream's delegate).
    private func recycle(_ state: inout StreamState) {
        guard isKnownUniquelyReferenced(&state) else { return }
        if let writeBatch {
            guard writeBatch.spareStreamStates.count < HTTP2WriteBatch.spareStreamStateLimit else { return }
            state.reuse(id: 0, delegate: nil)
            writeBatch.spareStreamStates.append(state)
        } else if spareStreamStates.count < 4 {
            state.reuse(id: 0, delegate: nil)
            spareStreamStates.append(state)
        }
    }

    func notifyClosed(_ state: StreamState, reason: HTTP2StreamCloseReason) {
        let delegate = state.delegate
        state.delegate = nil
        delegate?.http2(self, stream: state.id, didCloseWith: reason)
        self.delegate?.http2(self, didCloseStream: state.id)
    }

    /// The peer broke a rule of `framePolicy`: GOAWAY with its code, sent
    /// before the connection closes (nghttp2 stops reading meanwhile).
    func terminate(for violation: HTTP2InboundFramePolicy.Violation) {
        guard let session, closeCause == nil else { return }
        closeCause = .protocolError("HTTP/2 \(violation.code.name): \(violation.reason)")
        lifecycle.goAwaySent()
        nghttp2_session_terminate_session(session, violation.code.rawValue)
        scheduleFlush()
    }

    private func failConnection(code: Int32) {
        let reason = String(cString: nghttp2_strerror(code))
        closeCause = .protocolError("HTTP/2 protocol error: \(reason)")
        // nghttp2 queues a GOAWAY for the protocol errors it finds in frames,
        // but returns its own limits (too many CONTINUATION frames in one
        // header block, a peer flooding it with frames to answer) without
        // one: queue it then, so the peer learns why (docs/limits.md). A
        // no-op when a terminating GOAWAY is already queued. Not for a
        // client that never spoke HTTP/2 (a bad preface).
        if let session, code != NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue {
            let flood = code == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue || code == NGHTTP2_ERR_FLOODED.rawValue
            nghttp2_session_terminate_session(session, (flood ? HTTP2ErrorCode.enhanceYourCalm : .protocolError).rawValue)
            lifecycle.goAwaySent()
        }
        flush()
        close()
    }

    /// One check of `SendStallWatch`: streams with bytes queued and none
    /// sent since the last check count one more stalled check; at `limit`
    /// they are reset. Returns whether some stream still has bytes queued.
    func checkSendStalls(limit: Int) -> Bool {
        var queued = false
        var stalled: [Int32] = []
        for state in streams.values {
            guard state.outboundBytes > 0 else {
                state.stalledChecks = 0
                state.drainedAtCheck = state.drained
                continue
            }
            queued = true
            if state.drained == state.drainedAtCheck {
                state.stalledChecks += 1
                if state.stalledChecks >= limit { stalled.append(state.id) }
            } else {
                state.stalledChecks = 0
                state.drainedAtCheck = state.drained
            }
        }
        for id in stalled { reset(stream: id, errorCode: .cancel) }
        return queued && !lifecycle.isClosed
    }

    private func connectionDidEnd() {
        guard lifecycle.ended() else { return }
        if budgetReserved > 0 {
            settings.bufferBudget?.release(budgetReserved)
            budgetReserved = 0
        }
        heldBytes = 0
        receivedHeldBytes = 0
        heldStorages.removeAll()
        keepalive?.stop()
        keepalive = nil
        sendStallWatch?.stop()
        sendStallWatch = nil
        let closing = pendingCloses
        pendingCloses.removeAll()
        pendingCredits.removeAll()
        for (state, reason) in closing { notifyClosed(state, reason: reason) }
        let states = streams.values
        streams.removeAll()
        for state in states { notifyClosed(state, reason: .connectionLost) }
        let delegate = self.delegate
        self.delegate = nil
        delegate?.http2ConnectionDidClose(self)
    }

    /// Calls `body` with the header block as nghttp2 name/value pairs
    /// pointing into the list's bytes, flagged NO_COPY: nghttp2 copies only
    /// the pair array on submit and reads the bytes when it packs the
    /// HEADERS frame, so `headers` must be a list its stream keeps
    /// unchanged until the stream closes (`StreamState.sentHead`,
    /// `sentTrailers`). nghttp2 neither copies nor lower-cases them then
    /// (1.4 % of the proxy's CPU went to that copy): every name the
    /// gateway sends is lower-case already — received ones (nghttp2 refuses
    /// upper case), the gateway's own constants and filter-added names
    /// (`PluginHeaderField` lower-cases them).
    func withNameValuePairs<R>(_ headers: HTTP2HeaderList, _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        headers.withUnsafeFieldBytes { fields in
            withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(headers.count, 1)) { pairs in
                var count = 0
                HTTP2HeaderList.forEachField(in: fields) { name, value in
                    // nghttp2 takes non-const pointers but only reads them;
                    // a field's bytes (even empty ones) point into the
                    // list's storage, which is not empty when it has one.
                    pairs[count] = nghttp2_nv(
                        name: UnsafeMutablePointer(mutating: name.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                        value: UnsafeMutablePointer(mutating: value.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                        namelen: name.count, valuelen: value.count,
                        flags: HPACKIndexingPolicy.isPerRequest(name) ? HTTP2Connection.noCopyNoIndexFlags : HTTP2Connection.noCopyFlags)
                    assert(!name.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }),
                           "header names reach nghttp2 lower-cased (it does not lower-case NO_COPY names)")
                    count += 1
                    return true
                }
                return body(UnsafePointer(pairs.baseAddress!), count)
            }
        }
    }
}

extension HTTP2Connection {
    static let noCopyFlags = UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue)
    static let noCopyNoIndexFlags = noCopyFlags | UInt8(NGHTTP2_NV_FLAG_NO_INDEX.rawValue)
}
