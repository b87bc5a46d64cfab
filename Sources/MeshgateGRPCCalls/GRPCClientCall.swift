import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import SwiftProtobuf

/// One gRPC call made by Meshgate itself on a client HTTP/2 connection
/// (active health checks, merged reflection's queries, etcd): sends request messages,
/// delivers response messages, and ends exactly once with a status, also
/// on a local timeout.
/// Runs on the connection's event loop.
public final class GRPCClientCall: HTTP2StreamDelegate {
    public var onMessage: ((ByteBuffer) -> Void)?
    /// Called exactly once.
    public var onFinish: ((GRPCStatus) -> Void)?

    /// Strong until the call ends (no `weak`: see `KeepalivePinger`); the
    /// connection holds the call as its stream's delegate until then too.
    private var connection: HTTP2Connection?
    private var stream: Int32 = 0
    private var deframer: GRPCMessageDeframer
    /// The call ended because a response message was over its limit.
    public private(set) var exceededMessageLimit = false
    private var status: GRPCStatus?
    private var timer: Scheduled<Void>?
    private var done = false
    private var requestEnded = false

    /// `maxResponseMessageBytes`: a larger response message ends the call
    /// RESOURCE_EXHAUSTED at its length prefix (gRPC's default receive
    /// limit, 4 MiB, unless the caller knows its answers are smaller):
    /// window credit goes back as bytes arrive, so only this bounds what
    /// a peer can make the call buffer.
    public init(maxResponseMessageBytes: Int = 4 << 20) {
        deframer = GRPCMessageDeframer(maxMessageSize: maxResponseMessageBytes)
    }

    /// Starts the call; false when the connection cannot take a stream.
    @discardableResult
    public func start(on connection: HTTP2Connection, authority: String, path: String,
                      request: some SwiftProtobuf.Message, timeout: TimeAmount?) -> Bool {
        let bytes: [UInt8] = (try? request.serializedBytes()) ?? []
        return start(on: connection, authority: authority, path: path, message: bytes, endRequest: true, timeout: timeout)
    }

    /// Starts the call with one serialized request message. With
    /// `endRequest` false the request stream stays open for `send` (client
    /// and bidirectional streaming); false when the connection cannot take
    /// a stream.
    @discardableResult
    public func start(on connection: HTTP2Connection, authority: String, path: String, message: [UInt8],
                      endRequest: Bool, timeout: TimeAmount?, scheme: String = "http",
                      userAgent: String = "meshgate-health", extraHeaders: HTTP2HeaderList = HTTP2HeaderList()) -> Bool {
        var headers: HTTP2HeaderList = [
            (":method", "POST"), (":scheme", scheme), (":authority", authority), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", userAgent),
        ]
        if let timeout {
            headers.append("grpc-timeout", GRPCTimeout.format(nanoseconds: timeout.nanoseconds))
        }
        headers.append(contentsOf: extraHeaders)
        guard let id = connection.openStream(headers: headers, endStream: false, delegate: self) else { return false }
        self.connection = connection
        stream = id
        connection.send(data: GRPCMessageDeframer.frame(message), stream: id)
        if endRequest {
            connection.sendEnd(stream: id, trailers: nil)
            requestEnded = true
        }
        if let timeout, let loop = connection.eventLoop {
            timer = loop.assumeIsolated().scheduleTask(in: timeout) {
                self.cancel(GRPCStatus(.deadlineExceeded, "no answer within \(timeout.nanoseconds / 1_000_000) ms"))
            }
        }
        return true
    }

    /// Sends one more request message on a stream started with `endRequest: false`.
    public func send(message: [UInt8]) {
        guard !done, let connection else { return }
        connection.send(data: GRPCMessageDeframer.frame(message), stream: stream)
    }

    /// Ends the request stream (END_STREAM) of a call started with
    /// `endRequest: false`; responses still arrive.
    public func endRequest() {
        guard !done, !requestEnded, let connection else { return }
        connection.sendEnd(stream: stream, trailers: nil)
        requestEnded = true
    }

    /// Resets the stream and finishes with `status`.
    public func cancel(_ status: GRPCStatus = GRPCStatus(.cancelled, "cancelled")) {
        guard !done else { return }
        connection?.reset(stream: stream, errorCode: .cancel)
        end(status)
    }

    private func end(_ status: GRPCStatus) {
        guard !done else { return }
        done = true
        connection = nil
        timer?.cancel()
        timer = nil
        // A partial message goes now, not with the call.
        deframer = GRPCMessageDeframer(maxMessageSize: deframer.maxMessageSize)
        let finish = onFinish
        onFinish = nil
        onMessage = nil
        finish?(status)
    }

    // MARK: HTTP2StreamDelegate

    public func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if !isTrailers, let httpStatus = headers[":status"].flatMap(Int.init), httpStatus != 200 {
            status = GRPCStatus.fromHTTPStatus(httpStatus)
        }
        if let s = GRPCStatus(headers: headers) { status = s }
        if endStream, !done {
            // The response is complete (trailers, or a trailers-only
            // answer such as a gateway's local reply). A request side still
            // open would keep the stream half-open: reset it (NO_ERROR),
            // as gRPC clients do, and finish now.
            // (Also when END_STREAM is queued behind request bytes that
            // flow control holds: it may never get out.)
            if !requestEnded || connection.queuedBytes(stream: stream) > 0 {
                _ = connection.reset(stream: stream, errorCode: .noError)
            }
            end(status ?? GRPCStatus(.internal, "response ended without a gRPC status"))
        }
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        connection.consume(stream: stream, bytes: data.readableBytes)
        guard !done else { return }
        deframer.append(data)
        do {
            while !done, let message = try deframer.next() {
                onMessage?(message.payload)
            }
        } catch GRPCMessageDeframer.DeframeError.messageTooLarge(let size, let limit) {
            exceededMessageLimit = true
            cancel(GRPCStatus(.resourceExhausted, "response message of \(size) bytes exceeds the limit of \(limit) bytes"))
        } catch {
            cancel(GRPCStatus(.internal, "\(error)"))
        }
    }

    public func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}

    public func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}

    public func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        switch reason {
        case .finished:
            end(status ?? GRPCStatus(.internal, "stream ended without a gRPC status"))
        case .reset(let code, _):
            end(GRPCStatus(http2Error: code, context: "stream reset"))
        case .connectionLost:
            end(GRPCStatus(.unavailable, "connection lost"))
        case .headersTooLarge(let violation):
            end(GRPCStatus(.resourceExhausted, "the server sent \(violation)"))
        }
    }
}
