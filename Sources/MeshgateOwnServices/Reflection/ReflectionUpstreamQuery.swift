import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import MeshgateUpstream

/// One reflection request asked of one upstream endpoint, on its own
/// short-lived HTTP/2 connection (never one of the data path's): dial with
/// the cluster's TLS, one ServerReflectionInfo stream carrying the client's
/// request bytes, the first response message, close. A server that has
/// only the other reflection version (v1alpha-only servers are common) is
/// asked again with it. Reflection is rare (grpcurl, tooling) and its
/// answers are cached (`ReflectionCache`), so a connection per query costs
/// nothing that matters.
package final class ReflectionUpstreamQuery: HTTP2ConnectionDelegate {
    package enum Version: String, CaseIterable {
        case v1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        case v1alpha = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

        package var other: Version { self == .v1 ? .v1alpha : .v1 }
    }

    package struct Failure: Error {
        package let message: String
    }

    private let endpoint: EndpointPool
    private let request: [UInt8]
    private let timeout: TimeAmount
    private let completion: (Result<[UInt8], Failure>) -> Void
    private var call: GRPCClientCall?
    private var done = false

    private init(endpoint: EndpointPool, request: [UInt8], timeout: TimeAmount, completion: @escaping (Result<[UInt8], Failure>) -> Void) {
        self.endpoint = endpoint
        self.request = request
        self.timeout = timeout
        self.completion = completion
    }

    /// Asks `endpoint`; `completion` runs once, on the endpoint's loop.
    package static func ask(_ endpoint: EndpointPool, version: Version, request: [UInt8], timeout: TimeAmount,
                    completion: @escaping (Result<[UInt8], Failure>) -> Void) {
        let query = ReflectionUpstreamQuery(endpoint: endpoint, request: request, timeout: timeout, completion: completion)
        query.start(version: version, fallback: true)
    }

    private func start(version: Version, fallback: Bool) {
        let address = endpoint.endpoint.address
        let tls = endpoint.tls.map { ($0.current, $0.files.serverName ?? address.host) }
        var options = HTTP2DialOptions(connectTimeout: .nanoseconds(endpoint.cluster.connectTimeout.nanosecondsClamped), tls: tls)
        // An endpoint that reaches the gateway itself would have it ask its
        // own merged reflection, which asks the clusters again.
        options.refusePeer = endpoint.refuseOwnPeer
        HTTP2Dialer.dial(host: address.host, port: address.port, on: endpoint.loop.eventLoop, options: options, delegate: self) { result in
            switch result {
            case .failure(let error):
                self.finish(.failure(Failure(message: "\(address): \(error.message)")))
            case .success(let connection):
                self.send(on: connection, version: version, fallback: fallback)
            }
        }
    }

    private func send(on connection: HTTP2Connection, version: Version, fallback: Bool) {
        let call = GRPCClientCall()
        var answer: [UInt8]?
        call.onMessage = { bytes in
            if answer == nil { answer = Array(bytes.readableBytesView) }
        }
        call.onFinish = { status in
            connection.close()
            self.call = nil
            if let answer { return self.finish(.success(answer)) }
            if status.code == .unimplemented && fallback {
                return self.start(version: version.other, fallback: false)
            }
            self.finish(.failure(Failure(message: "\(self.endpoint.endpoint.address): \(status)")))
        }
        self.call = call
        if !call.start(on: connection, authority: endpoint.endpoint.address.description, path: version.rawValue, message: request,
                       endRequest: true, timeout: timeout, scheme: endpoint.scheme, userAgent: "meshgate-reflection") {
            self.call = nil
            connection.close()
            finish(.failure(Failure(message: "\(endpoint.endpoint.address): the connection took no stream")))
        }
    }

    private func finish(_ result: Result<[UInt8], Failure>) {
        guard !done else { return }
        done = true
        completion(result)
    }

    package func http2ConnectionDidClose(_ connection: HTTP2Connection) {}
}
