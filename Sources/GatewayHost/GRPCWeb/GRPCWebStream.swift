import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// One gRPC-Web call between a browser's request (an HTTP/2 stream, or an
/// HTTP/1.1 exchange) and its `ProxyCall`, which sees an ordinary gRPC
/// client (`CallClientStream`). On the way (grpc doc/PROTOCOL-WEB.md):
/// - request: a text body is base64-decoded; the head is gRPC's
///   (`GRPCWebRequest.upstreamHead`);
/// - response: the head gets the gRPC-Web content type and CORS fields;
///   messages pass as they are (base64 for text, carried across chunks);
///   trailers become the body's last frame (flag 0x80, then
///   `name:value\r\n` lines); a Trailers-Only answer stays headers only.
/// Flow control stays end to end: the call is credited the response
/// bytes the client actually took, mapped back from the (base64) wire
/// bytes, and the client the request bytes the call passed on.
///
/// Its decisions are values (`GRPCWebExchange`: the request's and the
/// answer's phases; `GRPCWebResponseCredit`, `GRPCWebRequestCredit`,
/// `HTTP1ReadWindow`: flow control), tested without a socket; this class
/// carries them out on the transport.
///
/// Lives on the connection's event loop. It and its call refer to each
/// other until the client's side ends (`clientClosed`), when it lets the
/// call go.
final class GRPCWebStream: CallClientStream, HTTP2StreamDelegate {
    enum Transport {
        case http2(HTTP2Connection, Int32)
        case http1(GRPCWebHTTP1Handler)
    }

    let transport: Transport
    let request: GRPCWebRequest
    /// CORS fields every answer carries (empty without an allowed origin).
    private let corsFields: HTTP2HeaderList
    var call: ProxyCall?
    private let allocator = ByteBufferAllocator()
    private var decoder = GRPCWebBase64.Decoder()
    private var encoder = GRPCWebBase64.Encoder()
    /// The request's and the answer's phases, and what follows each event.
    private var exchange = GRPCWebExchange()
    /// Response bytes handed to the transport and not yet taken by the
    /// client, mapped back to the call's bytes.
    private var responseCredit = GRPCWebResponseCredit()
    /// Text requests over HTTP/2: window credit in wire bytes for what the
    /// call took of the decoded ones.
    private var requestCredit = GRPCWebRequestCredit()
    /// Where the response's messages end: trailers go in-band, so they
    /// may only follow a whole message.
    private var responseFraming = GRPCMessageLengthScanner()
    /// HTTP/1.1: request bytes handed to the call and not yet credited
    /// back; reading pauses above the window.
    private var http1Window = HTTP1ReadWindow()

    init(transport: Transport, request: GRPCWebRequest, corsFields: HTTP2HeaderList) {
        self.transport = transport
        self.request = request
        self.corsFields = corsFields
    }

    var remoteAddress: SocketAddress? {
        switch transport {
        case .http2(let connection, _): return connection.remoteAddress
        case .http1(let handler): return handler.remoteAddress
        }
    }

    // MARK: The response (from the call)

    func sendResponseHeaders(stream: Int32, headers: HTTP2HeaderList, endStream: Bool) {
        guard exchange.responseHead(endStream: endStream) else { return }
        let head = webHead(headers)
        switch transport {
        case .http2(let connection, let id):
            connection.sendResponseHeaders(stream: id, headers: head, endStream: endStream)
        case .http1(let handler):
            handler.writeHead(head, endStream: endStream)
            if endStream { http1ResponseEnded(handler) }
        }
    }

    func send(data: ByteBuffer, stream: Int32) {
        guard !exchange.dropsCallOutput else { return }
        data.withUnsafeReadableBytes { _ = responseFraming.scan($0, limit: Int.max) }
        let wire = request.text ? encoder.encode(data, allocator: allocator) : data
        write(wire, original: data.readableBytes)
    }

    func sendEnd(stream: Int32, trailers: HTTP2HeaderList?) {
        switch exchange.responseEnd(atMessageBoundary: responseFraming.isAtMessageBoundary) {
        case .drop: return
        case .abort: return abortResponse()
        case .sendTrailerFrame: break
        }
        var frame = allocator.buffer(capacity: 64)
        if let trailers { Self.writeTrailerFrame(trailers, to: &frame) }
        var wire = frame
        if request.text {
            wire = encoder.encode(frame, allocator: allocator)
            var last = encoder.finish(allocator: allocator)
            wire.writeBuffer(&last)
        }
        write(wire, original: 0)
        switch transport {
        case .http2(let connection, let id):
            connection.sendEnd(stream: id, trailers: nil)
        case .http1(let handler):
            handler.writeEnd()
            http1ResponseEnded(handler)
        }
    }

    func holdBytes(_ bytes: Int, kind: HTTP2HoldKind) -> Bool {
        switch transport {
        case .http2(let connection, _): return connection.holdBytes(bytes, kind: kind)
        case .http1(let handler): return handler.holdBytes(bytes, kind: kind)
        }
    }

    func releaseHeldBytes(_ bytes: Int, kind: HTTP2HoldKind) {
        switch transport {
        case .http2(let connection, _): connection.releaseHeldBytes(bytes, kind: kind)
        case .http1(let handler): handler.releaseHeldBytes(bytes, kind: kind)
        }
    }

    /// Over HTTP/2 the connection counts what the slice pins; over HTTP/1.1
    /// (one call at a time) its storage counts in full.
    func holdSlice(_ slice: ByteBuffer, kind: HTTP2HoldKind) -> HTTP2HeldSlice? {
        switch transport {
        case .http2(let connection, _): return connection.holdSlice(slice, kind: kind)
        case .http1(let handler):
            let cost = slice.pinsLargerStorage ? slice.storageCapacity : slice.readableBytes
            return handler.holdBytes(cost, kind: kind) ? HTTP2HeldSlice(bytes: cost, kind: kind) : nil
        }
    }

    func release(_ held: HTTP2HeldSlice) {
        switch transport {
        case .http2(let connection, _): connection.release(held)
        case .http1(let handler): handler.releaseHeldBytes(held.bytes, kind: held.kind)
        }
    }

    func consume(stream: Int32, bytes: Int) {
        switch transport {
        case .http1(let handler):
            if http1Window.consumed(bytes) { handler.resumeReading() }
        case .http2(let connection, let id):
            guard request.text else { return connection.consume(stream: id, bytes: bytes) }
            // The call took `bytes` decoded bytes: credit their share of the wire.
            let wire = requestCredit.consumed(decoded: bytes)
            if wire > 0 { connection.consume(stream: id, bytes: wire) }
        }
    }

    /// Nothing is dropped: a gRPC-Web body is one byte stream, and cutting
    /// it anywhere but between messages would garble what follows (a final
    /// status waits behind the queued bytes; a client that does not read
    /// meets the listener's send_timeout).
    func discardQueuedData(stream: Int32) -> Int { 0 }

    /// The answer cannot end well (the exchange says so): the client sees
    /// the stream break (HTTP/2 RST_STREAM, HTTP/1.1 the connection closed
    /// before the last chunk).
    private func abortResponse() {
        switch transport {
        case .http2(let connection, let id): connection.reset(stream: id, errorCode: .internalError)
        case .http1(let handler): handler.exchangeDone(self, closeConnection: true)
        }
        clientClosed(cleanly: false)
    }

    private func write(_ wire: ByteBuffer, original: Int) {
        guard wire.readableBytes > 0 else {
            if original > 0 { call?.clientWrote(bytes: original) }
            return
        }
        responseCredit.sent(wire: wire.readableBytes, original: original)
        switch transport {
        case .http2(let connection, let id): connection.send(data: wire, stream: id)
        case .http1(let handler): handler.writeBody(wire, for: self)
        }
    }

    /// The client took `bytes` of wire bytes: the call gets credit for its
    /// own bytes among them.
    func clientTook(wireBytes bytes: Int) {
        let original = responseCredit.took(wire: bytes)
        if original > 0 { call?.clientWrote(bytes: original) }
    }

    /// The web head: `:status` first, the gRPC-Web content type, the
    /// upstream's other fields, then CORS. The upstream's `content-length`
    /// is dropped: it counts the gRPC body, and the web body is another
    /// length (the trailer frame added, base64 for text). Passed on, it
    /// would make an HTTP/1.1 client stop reading before the status and
    /// take the rest for the next response, and an HTTP/2 client refuse
    /// the stream (RFC 9113 §8.1.1).
    private func webHead(_ headers: HTTP2HeaderList) -> HTTP2HeaderList {
        var head = HTTP2HeaderList()
        head.reserveCapacity(headers.count + corsFields.count + 1)
        // Byte-level, no String per field: `:status` first (pseudo-fields
        // lead), then the web content type and the rest.
        headers.forEachField { name, value in
            if name.elementsEqual(":status".utf8) { head.append(name: name, value: value) }
            return head.isEmpty
        }
        if head.isEmpty { head.append(":status", "200") }
        head.append("content-type", request.responseContentType)
        headers.forEachField { name, value in
            if !name.elementsEqual(":status".utf8) && !name.elementsEqual("content-type".utf8) && !name.elementsEqual("content-length".utf8) {
                head.append(name: name, value: value)
            }
            return true
        }
        head.append(contentsOf: corsFields)
        return head
    }

    /// Trailers as gRPC-Web's last frame: 0x80, a 4-byte length, then each
    /// field as an HTTP/1 header line (names lower-case, as received).
    static func writeTrailerFrame(_ trailers: HTTP2HeaderList, to frame: inout ByteBuffer) {
        let start = frame.writerIndex
        frame.writeInteger(UInt8(0x80))
        frame.writeInteger(UInt32(0))
        trailers.forEachField { name, value in
            if name.first != UInt8(ascii: ":") {
                frame.writeBytes(name)
                frame.writeInteger(UInt8(ascii: ":"))
                frame.writeBytes(value)
                frame.writeInteger(UInt8(ascii: "\r"))
                frame.writeInteger(UInt8(ascii: "\n"))
            }
            return true
        }
        frame.setInteger(UInt32(frame.writerIndex - start - 5), at: start + 1)
    }

    // MARK: The request (from the transport)

    func requestBody(_ data: ByteBuffer) {
        guard !exchange.dropsCallOutput, let call else { return }
        var payload = data
        if request.text {
            do {
                payload = try decoder.decode(data, allocator: allocator)
            } catch {
                return cutOffMalformed("the grpc-web-text request body is not base64")
            }
            guard payload.readableBytes > 0 else {
                // Fewer than 4 characters: they wait in the decoder, their
                // window goes back now.
                if case .http2(let connection, let id) = transport { connection.consume(stream: id, bytes: data.readableBytes) }
                return
            }
            requestCredit.received(wire: data.readableBytes, decoded: payload.readableBytes)
        }
        if case .http1(let handler) = transport, http1Window.received(payload.readableBytes) {
            handler.pauseReading()
        }
        call.clientData(payload)
    }

    /// The request ended with its head (END_STREAM on HEADERS): the call
    /// knows from its start.
    func requestEndedWithHead() { exchange.requestEndedWithHead() }

    func requestEnd(trailers: HTTP2HeaderList?) {
        switch exchange.requestEnd(decoderAtBoundary: decoder.isAtBoundary) {
        case .ignore: return
        case .malformed: return cutOffMalformed("the grpc-web-text request body ends inside a base64 group")
        case .endAfterCutOff: break
        case .passToCall: call?.clientEnded(trailers: trailers)
        }
        // After the answer (a malformed body's, or an early one): the
        // exchange is over now.
        if case .http1(let handler) = transport { http1ResponseEnded(handler) }
    }

    /// The transport is gone (or the exchange over): the call learns it,
    /// once, and is let go.
    func clientClosed(cleanly: Bool) {
        let call = self.call
        self.call = nil
        call?.clientClosed(cleanly: cleanly)
    }

    /// A malformed body: the client gets INVALID_ARGUMENT (when nothing of
    /// the answer left yet), the call a cancelled client. The rest of the
    /// request is read and dropped, as after any answer given before the
    /// request ended: over HTTP/2 the head carries END_STREAM and the
    /// connection resets the request's rest with NO_ERROR once it left
    /// (RFC 9113 §8.1; a RST_STREAM submitted with it would cancel the
    /// head); over HTTP/1.1 the connection is kept for the next request.
    private func cutOffMalformed(_ message: String) {
        guard exchange.requestMalformed() == .answerInvalidArgument else { return abortResponse() }
        clientClosed(cleanly: false)
        let head = webHead(GRPCLocalReply.trailersOnly(GRPCStatus(.invalidArgument, message)))
        switch transport {
        case .http2(let connection, let id):
            connection.sendResponseHeaders(stream: id, headers: head, endStream: true)
        case .http1(let handler):
            handler.writeHead(head, endStream: true)
            http1ResponseEnded(handler)
        }
    }

    /// HTTP/1.1 has no stream to close: the exchange is over once both the
    /// answer and the request ended (an answer given early, such as a
    /// local reply, waits for the rest of the request, which is read and
    /// dropped, as an HTTP/2 stream would wait for END_STREAM).
    private func http1ResponseEnded(_ handler: GRPCWebHTTP1Handler) {
        switch exchange.http1Next {
        case .wait:
            return
        case .drainRequest:
            // The call is over for the proxy (its answer is out); the
            // request's rest is read and dropped (`call` is gone).
            clientClosed(cleanly: true)
            http1Window.stopCounting()
            handler.drainRequestBody()
        case .exchangeDone:
            handler.exchangeDone(self, closeConnection: false)
            clientClosed(cleanly: true)
        }
    }

    // MARK: HTTP2StreamDelegate (a gRPC-Web call over HTTP/2)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        requestEnd(trailers: headers)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        requestBody(data)
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        requestEnd(trailers: nil)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        clientTook(wireBytes: bytes)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        clientClosed(cleanly: reason == .finished)
    }
}
