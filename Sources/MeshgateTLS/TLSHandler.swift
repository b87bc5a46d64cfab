internal import COpenSSL
import NIOCore

/// TLS below HTTP/2 in a channel pipeline: OpenSSL drives the protocol
/// through memory BIOs, so every byte still moves through NIO (one wrapper,
/// no socket handed to OpenSSL).
///
/// Plaintext written before the handshake completes waits here. A failed
/// handshake closes the connection; `failure` says why (OpenSSL's reasons,
/// including certificate verification errors).
public final class TLSHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Fired (as a user inbound event) once the handshake completed.
    public struct HandshakeCompleted: Sendable {
        public let peer: TLSPeerIdentity?
        public let alpn: String?
    }

    private let ssl: OpaquePointer
    private let readBIO: OpaquePointer
    private let writeBIO: OpaquePointer
    private let role: TLSContext.Role
    private var handshakeDone = false
    private var closed = false
    private var pendingWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var flushPending = false
    /// The verified peer (nil without a peer certificate).
    public private(set) var peer: TLSPeerIdentity?
    /// Why the connection failed, when it did.
    public private(set) var failure: String?
    /// Called on the channel's loop when the handshake fails (also when the
    /// peer closes or stalls before it completes).
    public var onFailure: ((String) -> Void)?
    /// A peer that has not completed the handshake by then is cut off, so a
    /// slow or silent client cannot hold a socket (nil: no limit).
    public var handshakeTimeout: TimeAmount? = .seconds(10)
    private var handshakeTimer: Scheduled<Void>?

    /// `serverName` (client side): sent as SNI and checked against the
    /// server's certificate (DNS name, or IP address).
    public init(context: TLSContext, serverName: String? = nil) throws(TLSError) {
        guard let ssl = SSL_new(context.pointer) else { throw TLSError.openSSL("cannot create a TLS connection") }
        guard let readBIO = BIO_new(BIO_s_mem()), let writeBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError.openSSL("cannot create memory BIOs")
        }
        SSL_set_bio(ssl, readBIO, writeBIO)  // the SSL owns both BIOs now
        self.ssl = ssl
        self.readBIO = readBIO
        self.writeBIO = writeBIO
        self.role = context.role
        switch context.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let serverName {
                // An address is checked as one; a name that OpenSSL refuses
                // must not silently turn the name check off.
                if serverName.contains(":") || serverName.allSatisfy({ $0.isNumber || $0 == "." }),
                   X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName) == 1 {
                } else {
                    // (deinit frees the SSL: every property is set by now.)
                    guard SSL_set1_host(ssl, serverName) == 1 else {
                        throw TLSError.openSSL("'\(serverName)' cannot be checked as a server name")
                    }
                    _ = mg_ssl_set_sni(ssl, serverName)
                }
            }
        }
    }

    deinit {
        SSL_free(ssl)
    }

    // MARK: Inbound

    public func channelActive(context: ChannelHandlerContext) {
        if let timeout = handshakeTimeout {
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                guard !self.handshakeDone else { return }
                self.fail(context, "no TLS handshake within \(timeout.nanoseconds / 1_000_000) ms")
            }
        }
        if role == .client { advanceHandshake(context) }
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        if !closed {
            closed = true
            for (_, promise) in pendingWrites { promise?.fail(ChannelError.ioOnClosedChannel) }
            pendingWrites.removeAll()
            if !handshakeDone {
                failure = "the peer closed the connection during the TLS handshake"
                onFailure?(failure!)
            }
        }
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        let bytes = unwrapInboundIn(data)
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = BIO_write(readBIO, raw.baseAddress! + offset, Int32(raw.count - offset))
                if n <= 0 { break }
                offset += Int(n)
            }
        }
        if !handshakeDone {
            advanceHandshake(context)
            guard handshakeDone else { return }
        }
        readPlaintext(context)
    }

    private func readPlaintext(_ context: ChannelHandlerContext) {
        while !closed {
            var out = context.channel.allocator.buffer(capacity: 16 * 1024)
            var result: Int32 = 0
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 * 1024) { raw in
                ERR_clear_error()
                result = SSL_read(ssl, raw.baseAddress, Int32(min(raw.count, Int(Int32.max))))
                return max(Int(result), 0)
            }
            if result > 0 {
                context.fireChannelRead(wrapInboundOut(out))
                continue
            }
            switch SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                break
            case SSL_ERROR_ZERO_RETURN:
                // close_notify from the peer.
                writeCiphertext(context, promise: nil, flush: true)
                context.close(promise: nil)
                closed = true
            default:
                fail(context, TLSError.openSSL("TLS read failed").message)
            }
            break
        }
        // Reading may produce records to send (TLS 1.3 tickets, key updates).
        writeCiphertext(context, promise: nil, flush: true)
    }

    private func advanceHandshake(_ context: ChannelHandlerContext) {
        // A stale error on this thread's queue would fail SSL_get_error below.
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            handshakeDone = true
            handshakeTimer?.cancel()
            writeCiphertext(context, promise: nil, flush: true)
            var protocolName: UnsafePointer<UInt8>?
            var length: UInt32 = 0
            SSL_get0_alpn_selected(ssl, &protocolName, &length)
            let alpn = protocolName.map { String(decoding: UnsafeBufferPointer(start: $0, count: Int(length)), as: UTF8.self) }
            if role == .client && alpn != "h2" {
                fail(context, "the server did not agree to HTTP/2 (ALPN h2)")
                return
            }
            if let cert = SSL_get1_peer_certificate(ssl) {
                peer = TLSPeerIdentity(certificate: cert)
                X509_free(cert)
            }
            context.fireUserInboundEventTriggered(HandshakeCompleted(peer: peer, alpn: alpn))
            let writes = pendingWrites
            pendingWrites.removeAll()
            for (buffer, promise) in writes { encrypt(context, buffer, promise: promise) }
            if flushPending || !writes.isEmpty {
                flushPending = false
                context.flush()
            }
            return
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            writeCiphertext(context, promise: nil, flush: true)
        default:
            var reason = TLSError.openSSL("TLS handshake failed").message
            let verify = SSL_get_verify_result(ssl)
            if verify != Int(X509_V_OK), let text = X509_verify_cert_error_string(verify) {
                reason += " (certificate: \(String(cString: text)))"
            }
            // The alert OpenSSL queued tells the peer why.
            writeCiphertext(context, promise: nil, flush: true)
            fail(context, reason)
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        guard !closed else { return }
        closed = true
        failure = reason
        for (_, promise) in pendingWrites { promise?.fail(ChannelError.ioOnClosedChannel) }
        pendingWrites.removeAll()
        onFailure?(reason)
        context.close(promise: nil)
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        guard !closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard handshakeDone else {
            pendingWrites.append((buffer, promise))
            return
        }
        encrypt(context, buffer, promise: promise)
    }

    public func flush(context: ChannelHandlerContext) {
        guard handshakeDone else {
            flushPending = true
            return
        }
        context.flush()
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if handshakeDone && !closed && mode == .all {
            SSL_shutdown(ssl)
            writeCiphertext(context, promise: nil, flush: true)
        }
        closed = true
        context.close(mode: mode, promise: promise)
    }

    private func encrypt(_ context: ChannelHandlerContext, _ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        var ok = true
        ERR_clear_error()
        buffer.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = SSL_write(ssl, raw.baseAddress! + offset, Int32(min(raw.count - offset, Int(Int32.max))))
                if n <= 0 {
                    ok = false
                    break
                }
                offset += Int(n)
            }
        }
        if !ok {
            promise?.fail(ChannelError.ioOnClosedChannel)
            fail(context, TLSError.openSSL("TLS write failed").message)
            return
        }
        writeCiphertext(context, promise: promise, flush: false)
    }

    /// Moves what OpenSSL produced into the channel.
    private func writeCiphertext(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>?, flush: Bool) {
        let pending = Int(mg_bio_pending(writeBIO))
        if pending > 0 {
            var out = context.channel.allocator.buffer(capacity: pending)
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { raw in
                Int(max(BIO_read(writeBIO, raw.baseAddress, Int32(pending)), 0))
            }
            context.write(wrapOutboundOut(out), promise: promise)
        } else {
            promise?.succeed()
        }
        if flush { context.flush() }
    }
}
