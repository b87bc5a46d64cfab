import GatewayHost
import NIOCore
import MeshgateSupport

/// The clock of one admin connection, in front of the HTTP decoder so that
/// it sees each request's first byte. Admin addresses may be public, and a
/// connection is one of `admin.max_connections` slots, so none is held by a
/// client that does nothing:
/// - waiting for a request (from the accept, or after an answer left):
///   closed after `admin.idle_timeout`;
/// - from a request's first byte to its end (head and body): closed after
///   `admin.request_timeout` (a head sent a byte at a time, a body that
///   never ends);
/// - an answer that does not leave (the client does not read it) within
///   `request_timeout` of being written: closed, which also frees its bytes.
/// While the gateway works on an answer, or streams events, no timer runs
/// (the event stream watches its own progress).
package final class AdminConnectionTimeouts: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer

    package enum Phase: Equatable {
        case waiting, receiving, answering, sending, streaming
    }

    package let idleTimeout: TimeAmount
    package let requestTimeout: TimeAmount
    package private(set) var phase = Phase.waiting
    /// Answers written whose last byte has not left yet (pipelined
    /// requests may have several).
    private var answersLeaving = 0
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    package init(idleTimeout: TimeAmount, requestTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
        self.requestTimeout = requestTimeout
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        enter(.waiting)
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if phase == .waiting { enter(.receiving) }
        context.fireChannelRead(data)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    /// The request is whole; the gateway is working on the answer.
    package func requestComplete() { enter(.answering) }

    /// The answer is being written; it must leave within `request_timeout`.
    package func answerWritten() {
        answersLeaving += 1
        enter(.sending)
    }

    /// An answer's last byte has not left yet.
    package var answerLeaving: Bool { answersLeaving > 0 }

    /// An answer has left: once all have, wait for the next request.
    package func answerSent() {
        answersLeaving = max(0, answersLeaving - 1)
        // A pipelined request may already be in, and answered or streaming
        // (its phase is then its own).
        if phase == .sending && answersLeaving == 0 { enter(.waiting) }
    }

    package func streamStarted() { enter(.streaming) }

    private func enter(_ next: Phase) {
        phase = next
        timer?.cancel()
        timer = nil
        guard let context else { return }
        let limit: TimeAmount
        let reason: String
        switch next {
        case .waiting:
            guard idleTimeout > .zero else { return }
            (limit, reason) = (idleTimeout, "idle_timeout")
        case .receiving, .sending:
            (limit, reason) = (requestTimeout, next == .receiving ? "request_timeout (request incomplete)" : "request_timeout (answer not read)")
        case .answering, .streaming:
            return
        }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { [weak self] in
            guard let self, let context = self.context else { return }
            Log.debug("admin connection closed", ["reason": reason, "peer": context.channel.remoteAddress.map { "\($0)" } ?? "?"])
            context.close(promise: nil)
        }
    }
}
