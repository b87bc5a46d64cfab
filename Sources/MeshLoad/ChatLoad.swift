import ArgumentParser
import MeshProto
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import NIOPosix

/// Bidirectional-streaming load for benchmarks (h2load speaks only
/// unary): `--streams` Chat streams over `--connections` HTTP/2
/// connections, each a ping-pong (the next message goes when the answer to
/// the last one arrives), until `--messages` answers have arrived in all.
/// One event loop, like `h2load -t 1`. Prints one JSON line.
@main
struct ChatLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh-load", abstract: "Bidirectional-streaming ping-pong load on mesh.v1.MeshService/Chat.")

    @Option(help: "Host of the gateway or replica.") var host = "127.0.0.1"
    @Option(help: "Its port.") var port: Int
    @Option(help: "HTTP/2 connections.") var connections = 4
    @Option(help: "Chat streams in all, spread over the connections.") var streams = 100
    @Option(help: "Answers to receive in all.") var messages = 100_000
    @Option(help: "Seconds before giving up.") var timeout = 120
    @Option(name: .customLong("header"), help: "A request header 'name: value' (repeatable).") var headers: [String] = []

    func validate() throws {
        guard connections > 0, streams >= connections, messages >= streams else {
            throw ValidationError("need connections > 0, streams >= connections, messages >= streams")
        }
        for header in headers where !header.contains(":") || header.hasPrefix(":") {
            throw ValidationError("--header '\(header)': expected 'name: value'")
        }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let result = try loop.submit {
            let run = ChatRun(command: self, loop: loop)
            run.start()
            return run.done
        }.wait().wait()
        print(result)
        if result.contains("\"errors\":0,") == false { throw ExitCode(1) }
    }
}

/// The run's state, on its one event loop.
final class ChatRun: HTTP2ConnectionDelegate {
    let command: ChatLoad
    let loop: EventLoop
    let promise: EventLoopPromise<String>
    var done: EventLoopFuture<String> { promise.futureResult }
    private var connections: [HTTP2Connection] = []
    private var received = 0
    private var errors = 0
    private var openStreams = 0
    private var started = NIODeadline.now()
    private var finished = false
    private let ping: [UInt8]
    private let extraHeaders: HTTP2HeaderList

    init(command: ChatLoad, loop: EventLoop) {
        self.command = command
        self.loop = loop
        promise = loop.makePromise()
        var message = Mesh_V1_ChatMessage()
        message.userID = "load"
        message.message = "ping"
        ping = (try? message.serializedBytes()) ?? []
        var extra = HTTP2HeaderList()
        for header in command.headers {
            let colon = header.firstIndex(of: ":")!
            extra.append(header[..<colon].lowercased(), String(header[header.index(after: colon)...]).trimmingSpaces())
        }
        extraHeaders = extra
    }

    func start() {
        for _ in 0..<command.connections {
            HTTP2Dialer.dial(host: command.host, port: command.port, on: loop,
                             options: HTTP2DialOptions(connectTimeout: .seconds(5)), delegate: self) { result in
                switch result {
                case .success(let connection):
                    self.connections.append(connection)
                    if self.connections.count == self.command.connections { self.startStreams() }
                case .failure(let error):
                    self.fail("connect: \(error)")
                }
            }
        }
        loop.assumeIsolated().scheduleTask(in: .seconds(Int64(command.timeout))) { self.fail("timed out") }
    }

    private func startStreams() {
        started = .now()
        let perStream = command.messages / command.streams
        for i in 0..<command.streams {
            // The remainder goes to the first streams.
            let quota = perStream + (i < command.messages % command.streams ? 1 : 0)
            startStream(on: connections[i % connections.count], quota: quota)
        }
    }

    private func startStream(on connection: HTTP2Connection, quota: Int) {
        let call = GRPCClientCall()
        var left = quota
        call.onMessage = { _ in
            self.received += 1
            left -= 1
            if left > 0 { call.send(message: self.ping) } else { call.endRequest() }
        }
        call.onFinish = { status in
            if status.code != .ok || left > 0 { self.errors += 1 }
            self.openStreams -= 1
            if self.openStreams == 0 { self.finish() }
        }
        openStreams += 1
        guard call.start(on: connection, authority: "\(command.host):\(command.port)", path: "/mesh.v1.MeshService/Chat",
                         message: ping, endRequest: false, timeout: nil, userAgent: "mesh-load",
                         extraHeaders: extraHeaders) else {
            openStreams -= 1
            errors += 1
            return
        }
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        let rate = Double(received) / max(seconds, 1e-9)
        promise.succeed("{\"messages\":\(received),\"errors\":\(errors),\"seconds\":\(seconds),\"msgs_per_s\":\(rate)}")
        for connection in connections { connection.close() }
    }

    private func fail(_ reason: String) {
        guard !finished else { return }
        errors += 1
        finished = true
        promise.succeed("{\"messages\":\(received),\"errors\":\(errors),\"error\":\"\(reason)\"}")
        for connection in connections { connection.close() }
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
