import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import NIOCore

/// One gRPC call to etcd whose response messages are held to
/// `maxMessageBytes`: a message announced larger ends the call with
/// RESOURCE_EXHAUSTED as soon as its length prefix arrives, and its bytes
/// are never gathered. etcd is written by whoever can write the watched
/// prefix, so a Range or Watch response is untrusted input; a default gRPC
/// deframer would gather up to 64 MiB per message (and `GRPCClientCall`,
/// used for health checks, has no per-call limit).
///
/// Ends exactly once with a status, also on a local timeout. Confined to
/// the connection's event loop.
public final class EtcdCall: HTTP2StreamDelegate {
    /// Each response message, whole.
    var onMessage: (([UInt8]) -> Void)?
    /// Called exactly once.
    var onFinish: ((GRPCStatus) -> Void)?
    /// The call ended because a response message was over `maxMessageBytes`.
    private(set) var exceededMessageLimit = false

    let maxMessageBytes: Int
    /// Strong until the call ends: the connection holds the call as its
    /// stream's delegate until then too.
    private var connection: HTTP2Connection?
    private var stream: Int32 = 0
    private var deframer: GRPCMessageDeframer
    private var status: GRPCStatus?
    private var timer: Scheduled<Void>?
    private var done = false
    private var requestEnded = false

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
        self.deframer = GRPCMessageDeframer(maxMessageSize: maxMessageBytes)
    }

    /// Starts the call with one request message; with `endRequest` false
    /// the request side stays open (a watch). False when the connection
    /// takes no new stream.
    func start(on connection: HTTP2Connection, authority: String, path: String, message: [UInt8],
               endRequest: Bool, timeout: TimeAmount?, scheme: String) -> Bool {
        var headers: HTTP2HeaderList = [
            (":method", "POST"), (":scheme", scheme), (":authority", authority), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "meshgate-etcd"),
        ]
        if let timeout { headers.append("grpc-timeout", GRPCTimeout.format(nanoseconds: timeout.nanoseconds)) }
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

    /// Resets the stream and finishes with `status`.
    public func cancel(_ status: GRPCStatus = GRPCStatus(.cancelled, "cancelled")) {
        guard !done else { return }
        _ = connection?.reset(stream: stream, errorCode: .cancel)
        end(status)
    }

    private func end(_ status: GRPCStatus) {
        guard !done else { return }
        done = true
        connection = nil
        timer?.cancel()
        timer = nil
        deframer = GRPCMessageDeframer(maxMessageSize: maxMessageBytes)  // frees a partial message now
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
        if let text = headers["grpc-status"] {
            let code = Int(text).flatMap(GRPCStatusCode.init(rawValue:)) ?? .unknown
            status = GRPCStatus(code, GRPCMessageEncoding.percentDecode(headers["grpc-message"] ?? ""))
        }
        if endStream, !done {
            // The response is complete; a request side still open (a watch)
            // would keep the stream half-open: reset it (NO_ERROR), as gRPC
            // clients do.
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
                onMessage?(Array(message.payload.readableBytesView))
            }
        } catch GRPCMessageDeframer.DeframeError.messageTooLarge(let size, let limit) {
            exceededMessageLimit = true
            cancel(GRPCStatus(.resourceExhausted, "a response message of \(size) bytes, over the limit of \(limit) bytes"))
        } catch {
            cancel(GRPCStatus(.internal, "unreadable response: \(error)"))
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
            end(GRPCStatus(.resourceExhausted, "etcd sent \(violation)"))
        }
    }
}
