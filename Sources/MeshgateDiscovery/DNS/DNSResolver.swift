import MeshgatePosix
import NIOCore
import NIOPosix
import MeshgateConfig

/// Asks one DNS server, on the event loop it is given. Queries go over UDP
/// with EDNS(0) offering 1232-byte answers; a truncated answer (a service
/// with more replicas than fit) is asked again over TCP (RFC 7766), so a
/// large headless Service is never cut short; a server that rejects EDNS
/// (FORMERR) is asked again without it. Each query gets its own socket (a
/// random source port and id: the cheap defences against spoofed answers)
/// and a UDP query is sent again once if no answer comes in time.
/// Discovery asks a handful of names every few seconds, so there is no
/// cache and no connection reuse.
public final class DNSResolver {
    /// The UDP answer size offered with EDNS(0): DNS Flag Day 2020's value,
    /// small enough to avoid IP fragmentation.
    public static let ednsPayload: UInt16 = 1232

    public let server: SocketAddressSpec
    public let eventLoop: EventLoop
    public let timeout: TimeAmount

    public init(server: SocketAddressSpec, eventLoop: EventLoop, timeout: TimeAmount) {
        self.server = server
        self.eventLoop = eventLoop
        self.timeout = timeout
    }

    /// The first `nameserver` of /etc/resolv.conf, port 53 (127.0.0.53 when none).
    public static func systemServer() -> SocketAddressSpec {
        guard let bytes = try? Posix.readFile("/etc/resolv.conf") else { return SocketAddressSpec(host: "127.0.0.53", port: 53) }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.count >= 2, words[0] == "nameserver" {
                return SocketAddressSpec(host: String(words[1]), port: 53)
            }
        }
        return SocketAddressSpec(host: "127.0.0.53", port: 53)
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public func query(_ name: String, type: DNSRecordType, completion: @escaping (Result<DNSResponse, Failure>) -> Void) {
        send(name, type: type, attempt: 1, edns: true) { result in
            switch result {
            case .success(let response) where response.truncated:
                self.sendTCP(name, type: type, completion: completion)
            case .success(let response) where response.rcode == 1:
                // FORMERR to an EDNS query: a server from before RFC 6891 (§7).
                self.send(name, type: type, attempt: 1, edns: false) { result in
                    if case .success(let response) = result, response.truncated {
                        self.sendTCP(name, type: type, completion: completion)
                    } else {
                        completion(result)
                    }
                }
            default:
                completion(result)
            }
        }
    }

    private func send(_ name: String, type: DNSRecordType, attempt: Int, edns: Bool,
                      completion: @escaping (Result<DNSResponse, Failure>) -> Void) {
        let id = UInt16.random(in: 0...UInt16.max)
        let question: [UInt8]
        do {
            question = try DNSMessage.query(id: id, name: name, type: type, udpPayload: edns ? Self.ednsPayload : nil)
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
                    self.awaitAnswer(on: channel, reader: DNSAnswerReader.self, label: label, completion: completion) {
                        if attempt < 2 {
                            self.send(name, type: type, attempt: attempt + 1, edns: edns, completion: completion)
                        } else {
                            completion(.failure(Failure(description: "\(label): no answer after \(attempt) tries")))
                        }
                    }
                    let envelope = AddressedEnvelope(remoteAddress: target, data: channel.allocator.buffer(bytes: question))
                    channel.writeAndFlush(envelope, promise: nil)
                }
            }
    }
}

extension DNSResolver {
    /// One query over TCP: the message with its two-byte length, one
    /// answer back, within `timeout` from the connect.
    private func sendTCP(_ name: String, type: DNSRecordType, completion: @escaping (Result<DNSResponse, Failure>) -> Void) {
        let id = UInt16.random(in: 0...UInt16.max)
        let label = "\(type) \(name) at \(server) over TCP (the UDP answer was truncated)"
        guard let question = try? DNSMessage.query(id: id, name: name, type: type) else {
            completion(.failure(Failure(description: "'\(name)' is not a valid DNS name")))
            return
        }
        let message = [UInt8(question.count >> 8), UInt8(question.count & 0xff)] + question
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(DNSStreamReader(expectedID: id)) }
            }
            .connect(host: server.host, port: server.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    completion(.failure(Failure(description: "\(label): cannot connect: \(error)")))
                case .success(let channel):
                    self.awaitAnswer(on: channel, reader: DNSStreamReader.self, label: label, completion: completion) {
                        completion(.failure(Failure(description: "\(label): no answer within \(self.timeout.nanoseconds / 1_000_000) ms")))
                    }
                    channel.writeAndFlush(channel.allocator.buffer(bytes: message), promise: nil)
                }
            }
    }
}

extension DNSResolver {
    /// The one answer `reader` delivers on `channel`, or `onTimeout` after
    /// `timeout`, whichever comes first; the channel is closed either way.
    private func awaitAnswer<Reader: DNSAnswerSource>(on channel: Channel, reader: Reader.Type, label: String,
                                                      completion: @escaping (Result<DNSResponse, Failure>) -> Void,
                                                      onTimeout: @escaping () -> Void) {
        guard let reader = try? channel.pipeline.syncOperations.handler(type: Reader.self) else {
            channel.close(promise: nil)
            completion(.failure(Failure(description: "\(label): no DNS reader on the channel")))
            return
        }
        var finished = false
        let timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            guard !finished else { return }
            finished = true
            channel.close(promise: nil)
            onTimeout()
        }
        reader.onAnswer = { answer in
            guard !finished else { return }
            finished = true
            timer.cancel()
            channel.close(promise: nil)
            completion(answer.mapError { Failure(description: "\(label): \($0)") })
        }
    }
}

/// A channel handler that hands over one parsed answer.
private protocol DNSAnswerSource: ChannelHandler {
    var onAnswer: ((Result<DNSResponse, DNSMessageError>) -> Void)? { get set }
}

/// Reads one length-prefixed DNS message from a TCP stream; the connection
/// closing first is an error.
private final class DNSStreamReader: ChannelInboundHandler, DNSAnswerSource {
    public typealias InboundIn = ByteBuffer
    public let expectedID: UInt16
    public var onAnswer: ((Result<DNSResponse, DNSMessageError>) -> Void)?
    private var received: [UInt8] = []

    public init(expectedID: UInt16) { self.expectedID = expectedID }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytesView
        guard received.count >= 2 else { return }
        let length = Int(received[0]) << 8 | Int(received[1])
        guard received.count >= 2 + length else { return }
        let answer = Result { () throws(DNSMessageError) -> DNSResponse in
            try DNSMessage.parseResponse(Array(received[2..<(2 + length)]), expectedID: expectedID)
        }
        onAnswer?(answer)
        onAnswer = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        onAnswer?(.failure(DNSMessageError(message: "the server closed the connection before answering")))
        onAnswer = nil
    }
}

/// Takes the first datagram that parses as the answer to our id; others
/// (late answers to an earlier try, spoofs) are dropped.
private final class DNSAnswerReader: ChannelInboundHandler, DNSAnswerSource {
    public typealias InboundIn = AddressedEnvelope<ByteBuffer>
    public let expectedID: UInt16
    public var onAnswer: ((Result<DNSResponse, DNSMessageError>) -> Void)?

    public init(expectedID: UInt16) { self.expectedID = expectedID }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
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
