import MeshgateHTTP2
import NIOCore
import NIOHTTP1
import MeshgateSupport

/// gRPC-Web over HTTP/1.1 on a `grpc_web: true` listener: a connection
/// whose first bytes are an HTTP/1.x request (not the HTTP/2 preface)
/// gets NIO's HTTP/1 codec and this handler. Each request is one
/// exchange: a preflight answered here, or a call routed like an HTTP/2
/// one (`DownstreamConnection.startWebCall`) and translated by a
/// `GRPCWebStream`; the response streams as chunked transfer encoding.
/// Exchanges on one connection follow each other (keep-alive; pipelined
/// requests wait in NIO's pipelining handler).
package final class GRPCWebHTTP1Handler: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = HTTPServerResponsePart

    private let router: DownstreamConnection
    private var context: ChannelHandlerContext?
    private var current: GRPCWebStream?
    /// The exchanges' decisions: local answer or call, keep-alive, drain.
    private var state = GRPCWebHTTP1Connection()
    /// The listener's `idle_timeout`, armed whenever the connection waits
    /// on the client alone: between exchanges (and before a request head
    /// is complete), and for the rest of a request whose answer is out.
    /// A request head cancels it, so when it fires the client is idle or
    /// stuck: the connection closes.
    private var idleTimer: Scheduled<Void>?

    package init(router: DownstreamConnection) {
        self.router = router
    }

    package var remoteAddress: SocketAddress? { context?.channel.remoteAddress }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        router.loop.register(self)
        armIdleTimer()
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        releaseHeldBytes(heldBytes, kind: .required)
        router.loop.unregister(self)
        self.context = nil
    }

    private func armIdleTimer() {
        idleTimer?.cancel()
        idleTimer = nil
        let timeout = router.listenerConfig.idleTimeout
        guard timeout > .zero, let context else { return }
        // Strong capture, no `weak`: the close cancels the timer.
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanosecondsClamped)) {
            self.idleTimer = nil
            Log.debug("gRPC-Web HTTP/1.1 connection idle: closing", ["listener": self.router.listenerName])
            self.context?.close(promise: nil)
        }
    }

    /// Bytes the current call keeps (its head, its replay buffer), counted
    /// as an HTTP/2 connection counts them (`HTTP2Connection.holdBytes`):
    /// within the listener's per_connection_buffer_limit_bytes (droppable
    /// ones up to half of it; received ones, bounded by the read window,
    /// not there), and reserved from the process-wide budget byte for byte
    /// (one call at a time here: an atomic per kept chunk is cheap enough).
    private var heldBytes = 0

    package func holdBytes(_ bytes: Int, kind: HTTP2HoldKind) -> Bool {
        guard context != nil else { return false }
        let cap = router.listenerConfig.perConnectionBufferLimitBytes
        if kind != .received, heldBytes + bytes > (kind == .droppable ? cap / 2 : cap) { return false }
        let budget = router.loop.bufferBudget
        guard kind == .droppable ? budget.reserveForHolding(bytes) : budget.reserve(bytes) else { return false }
        heldBytes += bytes
        return true
    }

    package func releaseHeldBytes(_ bytes: Int, kind: HTTP2HoldKind) {
        let released = min(bytes, heldBytes)
        heldBytes -= released
        router.loop.bufferBudget.release(released)
    }

    /// An exchange is under way (what the drain waits for).
    package var hasExchange: Bool { current != nil }

    /// The gateway drains: no further exchange; the connection closes when
    /// the current one ends (at once when there is none).
    package func beginGracefulShutdown() {
        if state.beginGracefulShutdown() { context?.close(promise: nil) }
    }

    package func close() { context?.close(promise: nil) }

    /// Request bytes the call has not passed on pile up: stop reading the
    /// socket until it has (HTTP/1.1's only flow control).
    package func pauseReading() {
        _ = context?.channel.setOption(ChannelOptions.autoRead, value: false)
    }

    package func resumeReading() {
        guard let context else { return }
        _ = context.channel.setOption(ChannelOptions.autoRead, value: true)
        context.read()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            idleTimer?.cancel()
            idleTimer = nil
            request(head)
        case .body(let body):
            current?.requestBody(body)
        case .end(let trailers):
            if let next = state.requestEnd() { carryOut(next) }
            current?.requestEnd(trailers: trailers.map(Self.headerList))
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        let web = current
        current = nil
        web?.clientClosed(cleanly: false)
        context.fireChannelInactive()
    }

    private func request(_ head: HTTPRequestHead) {
        let origin = head.headers.first(name: "origin")
        let listener = router.listenerConfig
        let web = head.method == .POST ? GRPCWebRequest(contentType: head.headers.first(name: "content-type") ?? "") : nil
        let route = GRPCWebHTTP1Connection.route(isOptions: head.method == .OPTIONS, isPost: head.method == .POST, isGRPCWeb: web != nil)
        state.requestHead(keepAlive: head.isKeepAlive, route: route)
        switch route {
        case .preflight:
            let answer = GRPCWebCORS.preflight(listener.cors, origin: origin)
            return answerLocally(status: answer.status, fields: answer.fields)
        case .unsupported:
            return answerLocally(status: 415, fields: [("content-type", "text/plain"), ("content-length", "0")])
        case .call:
            break
        }
        guard let web else { return }
        var headers = HTTP2HeaderList()
        headers.append(":method", "POST")
        headers.append(":scheme", router.tls == nil ? "http" : "https")
        headers.append(":path", head.uri)
        headers.append(":authority", head.headers.first(name: "host") ?? "")
        for field in head.headers {
            headers.append(field.name.lowercased(), field.value)
        }
        let stream = GRPCWebStream(transport: .http1(self), request: web,
                                   corsFields: GRPCWebCORS.responseFields(listener.cors, origin: origin))
        current = stream
        router.startWebCall(stream, headers: web.upstreamHead(headers), endStream: false)
    }

    private func answerLocally(status: Int, fields: HTTP2HeaderList) {
        var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status))
        for field in fields { head.headers.add(name: field.name, value: field.value) }
        context?.write(wrapOutboundOut(.head(head)), promise: nil)
        context?.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        // Its body (if any) is awaited for the idle timeout at most.
        armIdleTimer()
    }

    private static func headerList(_ headers: HTTPHeaders) -> HTTP2HeaderList {
        var list = HTTP2HeaderList()
        for field in headers { list.append(field.name.lowercased(), field.value) }
        return list
    }

    // MARK: From the exchange's GRPCWebStream

    /// The answer's head (`:status` first, no other pseudo-field).
    package func writeHead(_ headers: HTTP2HeaderList, endStream: Bool) {
        guard let context else { return }
        var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: Int(headers[":status"] ?? "200") ?? 200))
        for field in headers where !field.name.hasPrefix(":") { head.headers.add(name: field.name, value: field.value) }
        // A Trailers-Only answer is chunked too (NIO's encoder adds it),
        // its body just the last chunk: a client reading the body as it
        // arrives sees it end. With `content-length: 0`, Python's
        // http.client read1 never marks the response done, and its next
        // request on the kept connection fails.
        if !state.keepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if endStream {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.flush()
        }
    }

    /// A chunk of the answer's body; the stream learns when it left.
    func writeBody(_ bytes: ByteBuffer, for stream: GRPCWebStream) {
        guard let context else { return }
        let count = bytes.readableBytes
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenSuccess { stream.clientTook(wireBytes: count) }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: written)
    }

    package func writeEnd() {
        context?.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// The exchange is over (answer and request both ended), or cannot go
    /// on (`closeConnection`).
    func exchangeDone(_ stream: GRPCWebStream, closeConnection: Bool) {
        guard current === stream else {
            // A pipelined request already took over (NIO delivers it inside
            // the write of this one's end): the connection is its now.
            if closeConnection { context?.close(promise: nil) }
            return
        }
        current = nil
        resumeReading()
        carryOut(state.exchangeEnded(closeConnection: closeConnection))
    }

    /// The answer ended before the request: the rest of the request is
    /// read and dropped, for at most the idle timeout (a client that
    /// stops sending it is cut off).
    package func drainRequestBody() {
        resumeReading()
        armIdleTimer()
    }

    private func carryOut(_ next: GRPCWebHTTP1Connection.Next) {
        switch next {
        case .close: context?.close(promise: nil)
        case .awaitNextRequest: armIdleTimer()
        }
    }
}
