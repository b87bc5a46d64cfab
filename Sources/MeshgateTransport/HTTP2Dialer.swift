import MeshgateHTTP2
import MeshgateTLS
import NIOCore
import NIOPosix

/// How to dial one client HTTP/2 connection.
public struct HTTP2DialOptions {
    /// TCP connect (every address of the name, happy eyeballs).
    public var connectTimeout: TimeAmount
    /// After the connect: the TLS handshake and the peer's first SETTINGS.
    /// A peer that accepts TCP but never speaks HTTP/2 fails here.
    public var settingsTimeout: TimeAmount
    public var settings: HTTP2Settings
    /// TLS to the peer, when set: the context and the name to verify (and
    /// send as SNI).
    public var tls: (context: TLSContext, serverName: String)?
    /// A PING every `interval` once the connection is ready; no ACK within
    /// `timeout` closes it, after `onTimeout` hears why.
    public var keepalive: (interval: TimeAmount, timeout: TimeAmount, onTimeout: (_ reason: String) -> Void)?
    /// Shared by the connections of one event loop (see `HTTP2WriteBatch`).
    public var writeBatch: HTTP2WriteBatch?
    /// Asked once TCP is connected, with the address it reached (what the
    /// host name resolved to): a reason makes the dial fail with it, the
    /// connection closed before TLS or HTTP/2 go further. Upstream pools
    /// refuse the gateway's own listeners here.
    public var refusePeer: ((SocketAddress) -> String?)?

    public init(connectTimeout: TimeAmount, settingsTimeout: TimeAmount? = nil, settings: HTTP2Settings = HTTP2Settings(),
                tls: (context: TLSContext, serverName: String)? = nil) {
        self.connectTimeout = connectTimeout
        self.settingsTimeout = settingsTimeout ?? connectTimeout
        self.settings = settings
        self.tls = tls
    }
}

/// Why a dial failed, in words for logs, statuses and /clusters: the
/// connect error, "TLS: <OpenSSL's reason>", or the missing SETTINGS.
public struct HTTP2DialError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The one way Meshgate opens a client HTTP/2 connection — upstream pools,
/// health probes and the etcd client all dial through here: TCP with a
/// connect timeout and TCP_NODELAY, TLS when asked (ALPN h2, the server
/// name verified), then HTTP/2, ready only once the peer's first SETTINGS
/// arrived (so its stream limit is known), with keepalive started.
///
/// `completion` runs exactly once, on `eventLoop`: with the ready
/// connection, whose delegate is then `delegate`, or with why it failed
/// (the connection is closed by then, and `delegate` never hears of it).
public enum HTTP2Dialer {
    public static func dial(host: String, port: Int, on eventLoop: EventLoop, options: HTTP2DialOptions,
                            delegate: HTTP2ConnectionDelegate,
                            completion: @escaping (Result<HTTP2Connection, HTTP2DialError>) -> Void) {
        eventLoop.preconditionInEventLoop()
        let dial = PendingDial(owner: delegate, options: options, completion: completion)
        let bound = NIOLoopBound(dial, eventLoop: eventLoop)
        let writeBatch = NIOLoopBound(options.writeBatch, eventLoop: eventLoop)
        let settings = options.settings
        let tls = options.tls.map { (context: $0.context, serverName: $0.serverName) }
        let refusePeer = options.refusePeer
        ClientBootstrap(group: eventLoop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            // As the gateway's listeners: one pooled receive buffer per connection.
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let handler = try TLSHandler(context: tls.context, serverName: tls.serverName)
                        // A failed handshake only closes the channel: keep why.
                        handler.onFailure = { reason in bound.value.tlsFailure = reason }
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    let http2 = HTTP2Connection(role: .client, settings: settings, writeBatch: writeBatch.value, delegate: bound.value)
                    try channel.pipeline.syncOperations.addHandler(http2)
                }
            }
            .connect(host: host, port: port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    if let refusePeer, let peer = channel.remoteAddress, let refusal = refusePeer(peer) {
                        // Failed before the channel's close reaches the
                        // delegate, which then has no winner to report.
                        dial.fail(refusal)
                        channel.close(promise: nil)
                        return
                    }
                    // With several addresses several channels may start: the
                    // connection is the winning channel's.
                    guard let http2 = try? channel.pipeline.syncOperations.handler(type: HTTP2Connection.self) else {
                        return dial.fail("no HTTP/2 handler on the connection")
                    }
                    dial.connected(http2, on: eventLoop)
                case .failure(let error):
                    dial.fail("connect failed: \(error)")
                }
            }
    }
}

/// The connection's delegate until it is ready: waits for the first
/// SETTINGS, then hands the connection to its owner.
private final class PendingDial: HTTP2ConnectionDelegate {
    private let owner: HTTP2ConnectionDelegate
    private let options: HTTP2DialOptions
    private var completion: ((Result<HTTP2Connection, HTTP2DialError>) -> Void)?
    private var winner: HTTP2Connection?
    private var timer: Scheduled<Void>?
    var tlsFailure: String?

    init(owner: HTTP2ConnectionDelegate, options: HTTP2DialOptions,
         completion: @escaping (Result<HTTP2Connection, HTTP2DialError>) -> Void) {
        self.owner = owner
        self.options = options
        self.completion = completion
    }

    func connected(_ connection: HTTP2Connection, on eventLoop: EventLoop) {
        guard completion != nil else { return }
        if winner == nil { winner = connection }
        let timeout = options.settingsTimeout
        timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            let what = self.options.tls == nil ? "HTTP/2 SETTINGS" : "TLS handshake and HTTP/2 SETTINGS"
            connection.close(reason: "no \(what) from the peer within \(timeout.nanoseconds / 1_000_000) ms")
        }
    }

    func fail(_ message: String) {
        timer?.cancel()
        guard let completion else { return }
        self.completion = nil
        completion(.failure(HTTP2DialError(message)))
    }

    func http2ConnectionDidReceiveSettings(_ connection: HTTP2Connection) {
        if winner == nil { winner = connection }
        guard connection === winner, let completion else { return }
        self.completion = nil
        timer?.cancel()
        connection.delegate = owner
        if let keepalive = options.keepalive {
            connection.startKeepalive(interval: keepalive.interval, timeout: keepalive.timeout, onTimeout: keepalive.onTimeout)
        }
        completion(.success(connection))
    }

    func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        // Only the winner's end counts: a losing channel of happy eyeballs
        // closes quietly.
        guard connection === winner else { return }
        if let tlsFailure { return fail("TLS: \(tlsFailure)") }
        fail(connection.closeReason ?? "the peer closed the connection before its HTTP/2 SETTINGS")
    }
}
