import MeshgateHTTP2
import NIOCore

/// One client HTTP/2 connection that its owner's calls share, and the calls
/// waiting for it: dialed (through `HTTP2Dialer`, by the owner's `dial`)
/// when first asked for, and again once it has closed or takes no new
/// streams. The health probes and the etcd client each keep one.
///
/// A waiter is only ever handed a connection that can open streams at that
/// moment. When the connection stops taking streams between the dial and a
/// waiter's turn (an earlier waiter closed it, the peer sent GOAWAY, the
/// slot was closed), the waiters left get a fresh dial, or, once the slot
/// is closed, its `closeReason` as an error. A freshly dialed connection
/// that takes no streams fails its waiters rather than being dialed again,
/// so a peer that always refuses cannot make the slot redial in a loop.
///
/// Confined to `eventLoop`: every method must be called there, and every
/// callback (waiters, `dial`'s completion, `onClose`) runs there.
public final class HTTP2ConnectionSlot: HTTP2ConnectionDelegate {
    public typealias Result = Swift.Result<HTTP2Connection, HTTP2DialError>
    /// Dials one connection with `delegate` as its delegate once ready
    /// (`HTTP2Dialer.dial(..., delegate:completion:)`), and calls
    /// `completion` once, on the event loop. The owner picks the peer and
    /// the options per dial (the next etcd endpoint, a rotated TLS context)
    /// and words the failure.
    public typealias Dial = (_ delegate: HTTP2ConnectionDelegate, _ completion: @escaping (Result) -> Void) -> Void

    public let eventLoop: EventLoop
    private let dial: Dial
    /// Hears that the slot's current connection closed (not one it had
    /// already replaced).
    public var onClose: ((HTTP2Connection) -> Void)?
    private var connection: HTTP2Connection?
    private var dialing = false
    private var waiters: [(Result) -> Void] = []
    /// Set by `close(reason:)`: no dial after it.
    public private(set) var closeReason: String?

    public init(eventLoop: EventLoop, dial: @escaping Dial) {
        self.eventLoop = eventLoop
        self.dial = dial
    }

    /// The connection, when there is one that takes new streams:
    /// `canOpenStreams` is false as soon as a close or a GOAWAY is queued
    /// (the connection's lifecycle says so); a `closeReason` is checked too.
    public var usableConnection: HTTP2Connection? {
        guard let connection, connection.canOpenStreams, connection.closeReason == nil else { return nil }
        return connection
    }

    /// Calls `body` with a connection that can open streams — at once when
    /// the current one can, else after a dial — or with why there is none.
    public func withConnection(_ body: @escaping (Result) -> Void) {
        eventLoop.preconditionInEventLoop()
        if let closeReason { return body(.failure(HTTP2DialError(closeReason))) }
        if let connection = usableConnection { return body(.success(connection)) }
        waiters.append(body)
        handOver()
    }

    /// Closes the connection; waiters get `reason` as an error, now and
    /// from then on. A dial under way ends with its connection closed.
    public func close(reason: String) {
        eventLoop.preconditionInEventLoop()
        guard closeReason == nil else { return }
        closeReason = reason
        let current = connection
        connection = nil
        current?.close(reason: reason)
        failWaiters(HTTP2DialError(reason))
    }

    /// Hands the current connection to the waiters in order while it takes
    /// streams (a waiter may close it, or ask again, meanwhile); dials when
    /// it does not.
    private func handOver() {
        while !waiters.isEmpty {
            if let closeReason { return failWaiters(HTTP2DialError(closeReason)) }
            guard let connection = usableConnection else { return startDial() }
            let waiter = waiters.removeFirst()
            waiter(.success(connection))
        }
    }

    private func startDial() {
        guard !dialing else { return }
        dialing = true
        connection = nil
        dial(self) { result in
            self.eventLoop.preconditionInEventLoop()
            self.dialing = false
            switch result {
            case .success(let http2):
                if self.closeReason != nil {
                    // Its waiters were failed by `close(reason:)`.
                    http2.close(reason: self.closeReason ?? "")
                    return
                }
                self.connection = http2
                guard self.usableConnection != nil else {
                    return self.failWaiters(HTTP2DialError(http2.closeReason ?? "the peer took no new streams once connected"))
                }
                self.handOver()
            case .failure(let error):
                self.failWaiters(error)
            }
        }
    }

    /// Fails the waiters there are now; one that asks again meanwhile
    /// waits for the next dial.
    private func failWaiters(_ error: HTTP2DialError) {
        let failed = waiters
        waiters.removeAll()
        failed.forEach { $0(.failure(error)) }
    }

    public func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        guard connection === self.connection else { return }
        self.connection = nil
        onClose?(connection)
    }
}
