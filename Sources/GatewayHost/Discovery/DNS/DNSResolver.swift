import NIOCore
import NIOPosix

/// Asks one DNS server over UDP, on the event loop it is given. Each query
/// gets its own socket (a random source port and id: the cheap defences
/// against spoofed answers) and is sent again once if no answer comes in
/// time. Discovery asks a handful of names every few seconds, so there is
/// no cache and no connection reuse.
final class DNSResolver {
    let server: SocketAddressSpec
    let eventLoop: EventLoop
    let timeout: TimeAmount

    init(server: SocketAddressSpec, eventLoop: EventLoop, timeout: TimeAmount) {
        self.server = server
        self.eventLoop = eventLoop
        self.timeout = timeout
    }

    /// The first `nameserver` of /etc/resolv.conf, port 53 (127.0.0.53 when none).
    static func systemServer() -> SocketAddressSpec {
        guard let bytes = FileBytes.read("/etc/resolv.conf") else { return SocketAddressSpec(host: "127.0.0.53", port: 53) }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.count >= 2, words[0] == "nameserver" {
                return SocketAddressSpec(host: String(words[1]), port: 53)
            }
        }
        return SocketAddressSpec(host: "127.0.0.53", port: 53)
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    func query(_ name: String, type: DNSRecordType, completion: @escaping (Result<DNSResponse, Failure>) -> Void) {
        send(name, type: type, attempt: 1, completion: completion)
    }

    private func send(_ name: String, type: DNSRecordType, attempt: Int, completion: @escaping (Result<DNSResponse, Failure>) -> Void) {
        let id = UInt16.random(in: 0...UInt16.max)
        let question: [UInt8]
        do {
            question = try DNSMessage.query(id: id, name: name, type: type)
        } catch {
            completion(.failure(Failure(description: "'\(name)' is not a valid DNS name: \(error)")))
            return
        }
        let target: SocketAddress
        do {
            target = try SocketAddress.makeAddressResolvingHost(server.host, port: server.port)
        } catch {
            completion(.failure(Failure(description: "DNS server \(server) is not an address: \(error)")))
            return
        }
        let label = "\(type) \(name) at \(server)"
        let bindHost = target.protocol == .inet6 ? "::" : "0.0.0.0"
        DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(DNSAnswerReader(expectedID: id)) }
            }
            .bind(host: bindHost, port: 0)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    completion(.failure(Failure(description: "\(label): cannot open a UDP socket: \(error)")))
                case .success(let channel):
                    guard let reader = try? channel.pipeline.syncOperations.handler(type: DNSAnswerReader.self) else {
                        channel.close(promise: nil)
                        completion(.failure(Failure(description: "\(label): no reader on the UDP socket")))
                        return
                    }
                    var finished = false
                    let timer = self.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
                        guard !finished else { return }
                        finished = true
                        channel.close(promise: nil)
                        if attempt < 2 {
                            self.send(name, type: type, attempt: attempt + 1, completion: completion)
                        } else {
                            completion(.failure(Failure(description: "\(label): no answer after \(attempt) tries")))
                        }
                    }
                    reader.onAnswer = { answer in
                        guard !finished else { return }
                        finished = true
                        timer.cancel()
                        channel.close(promise: nil)
                        completion(answer.mapError { Failure(description: "\(label): \($0)") })
                    }
                    let envelope = AddressedEnvelope(remoteAddress: target, data: channel.allocator.buffer(bytes: question))
                    channel.writeAndFlush(envelope, promise: nil)
                }
            }
    }
}

/// Takes the first datagram that parses as the answer to our id; others
/// (late answers to an earlier try, spoofs) are dropped.
private final class DNSAnswerReader: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let expectedID: UInt16
    var onAnswer: ((Result<DNSResponse, DNSMessageError>) -> Void)?

    init(expectedID: UInt16) { self.expectedID = expectedID }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let bytes = Array(envelope.data.readableBytesView)
        do {
            let response = try DNSMessage.parseResponse(bytes, expectedID: expectedID)
            onAnswer?(.success(response))
        } catch {
            // A datagram for another id is not ours to fail on.
            if bytes.count >= 2, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == expectedID { onAnswer?(.failure(error)) }
        }
    }
}
