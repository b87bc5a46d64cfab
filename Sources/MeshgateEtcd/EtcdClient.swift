import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTLS
import MeshgateTransport
import NIOCore
import ProtoWire

public struct EtcdError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable, Equatable {
        /// A response message was over the client's `maxMessageBytes`
        /// (the call was ended as its length prefix arrived).
        case responseTooLarge
        case failed
    }

    public let code: Code
    public let message: String
    public init(_ message: String, code: Code = .failed) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// A gRPC client of etcd's v3 API (KV, Watch, Lease) on one HTTP/2
/// connection, made with Meshgate's own HTTP/2 and TLS layers. Confined to
/// `eventLoop`: every method must be called there, and every callback runs
/// there. With several etcd endpoints, a failed connection moves to the
/// next one. No response message may be larger than `maxMessageBytes`.
public final class EtcdClient {
    public struct Endpoint: Sendable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// "host:port" or "[v6]:port"; a scheme (`http://`) is ignored.
        public init?(parsing text: String) {
            var rest = Substring(text)
            if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
            if rest.hasSuffix("/") { rest = rest.dropLast() }
            guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            var host = rest[..<colon]
            if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            guard !host.isEmpty else { return nil }
            self.init(host: String(host), port: port)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public let endpoints: [Endpoint]
    public let eventLoop: EventLoop
    /// The TLS context for the next connection (read per connection, so
    /// rotated certificates apply without a restart).
    private let tls: (@Sendable () -> TLSContext)?
    private let serverName: String?
    private let dialTimeout: TimeAmount
    /// The largest response message taken (see `GRPCClientCall`): etcd is
    /// written by whoever can write the watched prefix, so its answers are
    /// untrusted input.
    public let maxMessageBytes: Int
    private var next = 0
    /// Each dial goes to `currentEndpoint`; a failed dial or a lost
    /// connection moves to the next endpoint.
    private lazy var connection: HTTP2ConnectionSlot = {
        let slot = HTTP2ConnectionSlot(eventLoop: eventLoop) { [weak self] delegate, completion in
            guard let self else { return completion(.failure(HTTP2DialError("the etcd client is gone"))) }
            let endpoint = self.currentEndpoint
            let options = HTTP2DialOptions(connectTimeout: self.dialTimeout, tls: self.tls.map { ($0(), self.serverName ?? endpoint.host) })
            HTTP2Dialer.dial(host: endpoint.host, port: endpoint.port, on: self.eventLoop, options: options, delegate: delegate) { result in
                if case .failure = result { self.next += 1 }
                completion(result.mapError { HTTP2DialError("cannot connect to etcd at \(endpoint): \($0.message)") })
            }
        }
        slot.onClose = { [weak self] _ in self?.next += 1 }
        return slot
    }()

    /// The default `maxMessageBytes`: above etcd's own request limit
    /// (1.5 MiB unless `--max-request-bytes` raises it), so that one
    /// key-value, one watch event and one fragment of a watch batch always
    /// fit.
    public static let defaultMaxMessageBytes = 4 << 20

    public convenience init(endpoints: [Endpoint], eventLoop: EventLoop, tls: TLSContext? = nil, serverName: String? = nil,
                            dialTimeout: TimeAmount = .seconds(3), maxMessageBytes: Int = EtcdClient.defaultMaxMessageBytes) {
        var provider: (@Sendable () -> TLSContext)?
        if let tls { provider = { tls } }
        self.init(endpoints: endpoints, eventLoop: eventLoop, tlsProvider: provider, serverName: serverName, dialTimeout: dialTimeout,
                  maxMessageBytes: maxMessageBytes)
    }

    /// `tlsProvider` is asked for the context at each new connection.
    public init(endpoints: [Endpoint], eventLoop: EventLoop, tlsProvider: (@Sendable () -> TLSContext)?, serverName: String? = nil,
                dialTimeout: TimeAmount = .seconds(3), maxMessageBytes: Int = EtcdClient.defaultMaxMessageBytes) {
        precondition(!endpoints.isEmpty, "etcd needs at least one endpoint")
        self.endpoints = endpoints
        self.eventLoop = eventLoop
        self.tls = tlsProvider
        self.serverName = serverName
        self.dialTimeout = dialTimeout
        self.maxMessageBytes = maxMessageBytes
    }

    /// The endpoint the client is connected (or connecting) to.
    public var currentEndpoint: Endpoint { endpoints[next % endpoints.count] }

    public func close() {
        connection.close(reason: "the etcd client is closed")
    }

    // MARK: Calls

    /// One unary call; `timeout` bounds it, connecting included.
    public func unary(_ path: String, _ request: [UInt8], timeout: TimeAmount,
                      completion: @escaping (Result<[UInt8], EtcdError>) -> Void) {
        withConnection { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let connection):
                let call = GRPCClientCall(maxResponseMessageBytes: self.maxMessageBytes)
                var response: [UInt8]?
                call.onMessage = { response = Array($0.readableBytesView) }
                call.onFinish = { status in
                    if status.code == .ok, let response {
                        completion(.success(response))
                    } else {
                        completion(.failure(self.error(path, status, call)))
                    }
                }
                if !self.start(call, on: connection, path: path, message: request, endRequest: true, timeout: timeout) {
                    completion(.failure(EtcdError("\(path) at \(self.currentEndpoint): the connection takes no new streams")))
                }
            }
        }
    }

    /// Opens a bidirectional stream with its first request message.
    /// `onMessage` gets each response message; `onEnd` runs once. `onOpen`
    /// gets the call (to cancel the stream) unless no connection could be
    /// made (`onEnd` has run).
    public func stream(_ path: String, first request: [UInt8], onMessage: @escaping ([UInt8]) -> Void,
                       onEnd: @escaping (EtcdError) -> Void, onOpen: @escaping (GRPCClientCall) -> Void) {
        withConnection { result in
            switch result {
            case .failure(let error): onEnd(error)
            case .success(let connection):
                let call = GRPCClientCall(maxResponseMessageBytes: self.maxMessageBytes)
                call.onMessage = { onMessage(Array($0.readableBytesView)) }
                call.onFinish = { status in onEnd(self.error(path, status, call)) }
                if self.start(call, on: connection, path: path, message: request, endRequest: false, timeout: nil) {
                    onOpen(call)
                } else {
                    onEnd(EtcdError("\(path) at \(self.currentEndpoint): the connection takes no new streams"))
                }
            }
        }
    }

    private func error(_ path: String, _ status: GRPCStatus, _ call: GRPCClientCall) -> EtcdError {
        EtcdError("\(path) at \(currentEndpoint): \(status)", code: call.exceededMessageLimit ? .responseTooLarge : .failed)
    }

    private func start(_ call: GRPCClientCall, on connection: HTTP2Connection, path: String, message: [UInt8],
                       endRequest: Bool, timeout: TimeAmount?) -> Bool {
        call.start(on: connection, authority: currentEndpoint.description, path: path, message: message, endRequest: endRequest,
                   timeout: timeout, scheme: tls == nil ? "http" : "https", userAgent: "meshgate-etcd")
    }

    // MARK: etcd operations

    /// One page of keys: at most `request.limit` of `[key, rangeEnd)`.
    public func range(_ request: EtcdRangeRequest, timeout: TimeAmount = .seconds(5),
                      completion: @escaping (Result<EtcdRangePage, EtcdError>) -> Void) {
        unary("/etcdserverpb.KV/Range", EtcdMessages.rangeRequest(request).bytes, timeout: timeout) { result in
            completion(result.flatMap { bytes in
                Result { () throws(ProtoDecodeError) in try EtcdMessages.rangeResponse(bytes) }.mapError { EtcdError("Range: \($0)") }
            })
        }
    }

    public func put(key: String, value: String, lease: Int64 = 0, timeout: TimeAmount = .seconds(5),
                    completion: @escaping (Result<Void, EtcdError>) -> Void) {
        let request = EtcdMessages.putRequest(key: Array(key.utf8), value: Array(value.utf8), lease: lease).bytes
        unary("/etcdserverpb.KV/Put", request, timeout: timeout) { completion($0.map { _ in () }) }
    }

    public func delete(key: String, timeout: TimeAmount = .seconds(5), completion: @escaping (Result<Void, EtcdError>) -> Void) {
        unary("/etcdserverpb.KV/DeleteRange", EtcdMessages.deleteRequest(key: Array(key.utf8)).bytes, timeout: timeout) {
            completion($0.map { _ in () })
        }
    }

    /// A new lease; its id.
    public func grantLease(ttlSeconds: Int64, timeout: TimeAmount = .seconds(5), completion: @escaping (Result<Int64, EtcdError>) -> Void) {
        unary("/etcdserverpb.Lease/LeaseGrant", EtcdMessages.leaseGrantRequest(ttlSeconds: ttlSeconds).bytes, timeout: timeout) { result in
            completion(result.flatMap { bytes in
                guard let (id, _, error) = try? EtcdMessages.leaseResponse(bytes) else { return .failure(EtcdError("LeaseGrant: unreadable response")) }
                return error.isEmpty && id != 0 ? .success(id) : .failure(EtcdError("LeaseGrant refused: \(error)"))
            })
        }
    }

    /// One keep-alive round trip; the lease's remaining TTL (0 or less: the
    /// lease is gone).
    public func keepAlive(lease: Int64, timeout: TimeAmount = .seconds(5), completion: @escaping (Result<Int64, EtcdError>) -> Void) {
        // LeaseKeepAlive is a bidirectional stream; one request then the end
        // of the request stream gets exactly one answer.
        unary("/etcdserverpb.Lease/LeaseKeepAlive", EtcdMessages.leaseIDRequest(lease).bytes, timeout: timeout) { result in
            completion(result.flatMap { bytes in
                guard let (_, ttl, _) = try? EtcdMessages.leaseResponse(bytes) else { return .failure(EtcdError("LeaseKeepAlive: unreadable response")) }
                return .success(ttl)
            })
        }
    }

    public func revoke(lease: Int64, timeout: TimeAmount = .seconds(2), completion: @escaping (Result<Void, EtcdError>) -> Void) {
        unary("/etcdserverpb.Lease/LeaseRevoke", EtcdMessages.leaseIDRequest(lease).bytes, timeout: timeout) { completion($0.map { _ in () }) }
    }

    /// Watches every key under `prefix` from `startRevision` (inclusive).
    /// `onResponse` gets each batch of events with the revision it brings the
    /// watcher to (`fragment`: the batch goes on in the next response);
    /// `onEnd` runs once when the watch ends for any reason (compaction
    /// included: the caller lists again).
    public func watch(prefix: String, startRevision: Int64,
                      onResponse: @escaping (_ events: [EtcdWatchEvent], _ revision: Int64, _ fragment: Bool) -> Void,
                      onEnd: @escaping (EtcdError) -> Void, onOpen: @escaping (GRPCClientCall) -> Void) {
        var ended = false
        let end = { (error: EtcdError) in
            guard !ended else { return }
            ended = true
            onEnd(error)
        }
        var openCall: GRPCClientCall?
        let request = EtcdMessages.watchCreateRequest(prefix: Array(prefix.utf8), startRevision: startRevision).bytes
        stream("/etcdserverpb.Watch/Watch", first: request, onMessage: { bytes in
            guard let response = try? EtcdMessages.watchResponse(bytes) else {
                openCall?.cancel()
                end(EtcdError("Watch: unreadable response"))
                return
            }
            if response.canceled {
                openCall?.cancel()
                let reason = response.compactRevision > 0 ? "compacted at revision \(response.compactRevision)" : response.cancelReason
                end(EtcdError("watch canceled by etcd: \(reason)"))
                return
            }
            onResponse(response.events, response.revision, response.fragment)
        }, onEnd: end, onOpen: { call in
            openCall = call
            onOpen(call)
        })
    }

    // MARK: Connection

    private func withConnection(_ body: @escaping (Result<HTTP2Connection, EtcdError>) -> Void) {
        connection.withConnection { body($0.mapError { EtcdError($0.message) }) }
    }
}
