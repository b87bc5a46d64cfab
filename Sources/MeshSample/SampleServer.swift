import MeshgateJSON
import Dispatch
import MeshgateEtcd
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgatePosix
import MeshgateTLS
import NIOCore
import NIOPosix

/// One client connection to the sample server: dispatches each request to
/// its method handler by path.
final class SampleConnection: HTTP2ConnectionDelegate {
    let box: SampleServerBox
    var replica: ReplicaState { box.replica }

    init(box: SampleServerBox) {
        self.box = box
    }

    func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        box.connections.removeValue(forKey: ObjectIdentifier(connection))
    }

    func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
        let path = headers[":path"] ?? ""
        let call = GRPCServerCall(connection: connection, stream: stream, headers: headers, path: path)
        call.responseHeaders = [("x-mesh-replica", replica.id)]
        if let handler = box.methods[path] {
            handler(call, replica)
        } else {
            call.finish(GRPCStatus(.unimplemented, "method \(path) is not implemented by replica \(replica.id)"))
        }
        if endStream { call.onEnd?() }
        return call
    }
}

/// The sample mesh service: one event loop, h2c, on the project's own
/// HTTP/2 layer.
final class SampleServer {
    static func run(host: String, port: Int, replicaID: String, maxConcurrentStreams: Int, faults: MeshProtoFaults, tls: TLSContext?,
                    registration: SampleRegistration? = nil) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let settings = HTTP2Settings(maxConcurrentStreams: UInt32(maxConcurrentStreams))
        let box = try loop.submit { () -> SampleServerBox in
            let replica = ReplicaState(id: replicaID, eventLoop: loop)
            faults.apply(to: replica)
            var methods: [String: (GRPCServerCall, ReplicaState) -> Void] = [:]
            MeshServiceHandlers.register(&methods)
            HealthService.register(&methods)
            ReflectionService.register(&methods)
            ControlService.register(&methods)
            return SampleServerBox(replica: replica, methods: methods)
        }.wait()

        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    box.replica.stats.connections += 1
                    if let tls { try channel.pipeline.syncOperations.addHandler(try TLSHandler(context: tls)) }
                    let connection = HTTP2Connection(role: .server, settings: settings, writeBatch: box.writeBatch, delegate: SampleConnection(box: box))
                    // HTTP/1.x clients get a 505 from the gate.
                    try channel.pipeline.syncOperations.addHandlers(HTTPVersionGate(connection: connection, http1Handoff: nil), connection)
                    box.connections[ObjectIdentifier(connection)] = connection
                }
            }
            .bind(host: host, port: port).wait()
        log("listening", "\"replica\":\"\(replicaID)\",\"port\":\(channel.localAddress?.port ?? port)")
        // Registered only once it serves; unregistered before it stops serving.
        let registered = registration.map { r in
            EtcdRegistration(etcd: r.etcd, entry: r.entry, ttlSeconds: r.ttlSeconds, eventLoop: loop, tls: r.tls,
                             serverName: r.serverName) { message in
                log("etcd", "\"replica\":\"\(replicaID)\",\"detail\":\(jsonQuote(message))")
            }
        }

        let stop = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for sig in [Posix.Signal.terminate, Posix.Signal.interrupt] {
            try? Posix.ignoreSignal(sig)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        log("stopping", "\"replica\":\"\(replicaID)\"")
        if let registered {
            try? registered.stop().wait()
            // Keep serving while gateways watching etcd take this replica
            // out of rotation (what a Kubernetes preStop sleep is for).
            Posix.sleep(milliseconds: 500)
        }
        try? channel.close().wait()
        try? loop.submit {
            for c in box.connections.values where !c.isClosed { c.beginGracefulShutdown(finalGoAwayDelay: .milliseconds(100)) }
        }.wait()
        Posix.sleep(milliseconds: 300)
        try? group.syncShutdownGracefully()
        _ = sources
    }

    static func jsonQuote(_ text: String) -> String { JSONString.quoted(text) }

    static func log(_ message: String, _ fields: String) {
        var line = "{\"msg\":\"\(message)\",\(fields)}\n"
        line.withUTF8 { try? Posix.writeAll(Posix.standardError, UnsafeRawBufferPointer($0)) }
    }
}

/// The replica's state, handed to channel initializers on other threads.
/// `@unchecked Sendable`: the server runs a single event loop, and every use
/// of the contents happens on it.
final class SampleServerBox: @unchecked Sendable {
    let replica: ReplicaState
    let methods: [String: (GRPCServerCall, ReplicaState) -> Void]
    var connections: [ObjectIdentifier: HTTP2Connection] = [:]
    let writeBatch = HTTP2WriteBatch()

    init(replica: ReplicaState, methods: [String: (GRPCServerCall, ReplicaState) -> Void]) {
        self.replica = replica
        self.methods = methods
    }
}

/// `--register-etcd`: where and how the replica registers itself.
struct SampleRegistration {
    var etcd: [EtcdClient.Endpoint]
    var entry: EtcdRegistration.Entry
    var ttlSeconds: Int64
    /// TLS (or mutual TLS) to etcd; plaintext when nil.
    var tls: TLSContext?
    var serverName: String?
}
