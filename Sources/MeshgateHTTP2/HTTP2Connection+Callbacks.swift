internal import CNGHTTP2
import NIOCore

/// nghttp2's callbacks. Each is a C function pointer that finds its
/// `HTTP2Connection` through the session's user data (passed unretained: the
/// connection owns the session and outlives every callback).
extension HTTP2Connection {
    /// `body` with the connection, without a retain and release around it
    /// (about 30 callbacks per proxied call): the connection owns the
    /// session and is alive for as long as nghttp2 runs a callback, since
    /// nghttp2 only calls back from inside the connection's own methods.
    @inline(__always)
    static func with<R>(_ userData: UnsafeMutableRawPointer?, _ body: (HTTP2Connection) -> R) -> R {
        Unmanaged<HTTP2Connection>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
    }

    static let dataProvider = nghttp2_data_provider(
        source: nghttp2_data_source(ptr: nil),
        read_callback: { _, streamID, buffer, length, flags, _, userData in
            HTTP2Connection.with(userData) { $0.readOutbound(stream: streamID, into: buffer!, length: length, flags: flags!) }
        })

    static func installCallbacks(_ callbacks: OpaquePointer?) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            HTTP2Connection.with(userData) { $0.onBeginHeaders(frame!.pointee) }
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, userData in
            HTTP2Connection.with(userData) { $0.onHeader(
                stream: frame!.pointee.hd.stream_id,
                name: UnsafeBufferPointer(start: name, count: nameLength),
                value: UnsafeBufferPointer(start: value, count: valueLength)) }
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            HTTP2Connection.with(userData) { $0.onFrameReceived(frame!.pointee) }
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
            HTTP2Connection.with(userData) { $0.onDataChunk(stream: streamID, UnsafeRawBufferPointer(start: data, count: length)) }
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            HTTP2Connection.with(userData) { $0.onStreamClose(stream: streamID, errorCode: errorCode) }
        }
        nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks) { _, header, userData in
            HTTP2Connection.with(userData) { $0.onBeginFrame(header!.pointee) }
        }
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks) { _, _, _, userData in
            HTTP2Connection.with(userData) { $0.onInvalidFrame() }
        }
        nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks) { _, frame, _, userData in
            HTTP2Connection.with(userData) { $0.onFrameNotSent(frame!.pointee) }
        }
    }

    /// Server side: each frame header of the client, before nghttp2 acts
    /// on the frame (see HTTP2InboundFramePolicy).
    func onBeginFrame(_ header: nghttp2_frame_hd) -> Int32 {
        guard role == .server, let session, closeCause == nil else { return 0 }
        let id = header.stream_id
        if let violation = framePolicy.frameBegins(
            type: header.type, flags: header.flags, length: header.length, stream: id,
            // Only HEADERS needs it: no stream lookup for the other frames.
            streamIsOpen: header.type == HTTP2InboundFramePolicy.headersFrame && id != 0 && streams[id] != nil,
            highestClientStream: nghttp2_session_get_last_proc_stream_id(session)) {
            terminate(for: violation)
        }
        return 0
    }

    func onInvalidFrame() -> Int32 {
        guard role == .server, closeCause == nil else { return 0 }
        if let violation = framePolicy.invalidFrameReceived() { terminate(for: violation) }
        return 0
    }

    func onBeginHeaders(_ frame: nghttp2_frame) -> Int32 {
        guard frame.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
        let id = frame.hd.stream_id
        if role == .server, frame.headers.cat == NGHTTP2_HCAT_REQUEST {
            let state = makeStreamState(id: id, delegate: nil)
            state.incomingHeaders.reserveCapacity(12)
            streams[id] = state
        } else if let state = streams[id] {
            state.incomingBlock.reset()
            if let spare = spareHeaders.take() {
                state.incomingHeaders = spare
            } else {
                state.incomingHeaders = HTTP2HeaderList()
                state.incomingHeaders.reserveCapacity(8)
            }
        }
        return 0
    }

    /// Each decoded field, measured against the limits before it is
    /// copied: past them the block is refused and its other fields are
    /// dropped as nghttp2 decodes them (see HTTP2HeaderBlockMeter).
    func onHeader(stream id: Int32, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> Int32 {
        guard let state = streams[id] else { return 0 }
        let size = name.count + value.count
        let limit = Int(settings.maxHeaderListSize)
        if state.incomingBlock.violation != nil {
            // A request head over the limit, answered when it ends; unless
            // it decodes to what only HPACK references can make.
            guard state.incomingBlock.countDropped(nameAndValueBytes: size, cutoff: HTTP2HeaderBlockMeter.cutoff(forLimit: limit)) else {
                return cutOff(state)
            }
            return 0
        }
        guard state.incomingBlock.admit(nameAndValueBytes: size, maxBytes: limit, maxFields: settings.maxHeaderFields) else {
            return headerBlockWentOver(state)
        }
        state.incomingHeaders.append(name: UnsafeRawBufferPointer(name), value: UnsafeRawBufferPointer(value))
        return 0
    }

    /// A block passed a limit: what it holds goes at once. A server's
    /// request head is answered when the block ends (a stream must not be
    /// answered before its head is complete: `onFrameReceived`); any other
    /// block (trailers, a response head) is cut off now.
    private func headerBlockWentOver(_ state: StreamState) -> Int32 {
        state.incomingHeaders = HTTP2HeaderList()
        let requestHead = role == .server && state.receiving == .awaitingHead
        return requestHead ? 0 : cutOff(state)
    }

    /// Resets the stream with ENHANCE_YOUR_CALM (gRPC reads it as
    /// RESOURCE_EXHAUSTED) and has nghttp2 skip the rest of the block:
    /// NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE, after our own RST_STREAM (its
    /// INTERNAL_ERROR one is then not sent), decodes the remaining fields
    /// without checking them or calling back. The stream's delegate sees
    /// `headersTooLarge` when it closes.
    private func cutOff(_ state: StreamState) -> Int32 {
        guard let session, let violation = state.incomingBlock.violation else { return 0 }
        state.incomingHeaders = HTTP2HeaderList()
        state.sending = .reset
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), state.id, HTTP2ErrorCode.enhanceYourCalm.rawValue)
        delegate?.http2(self, didRefuseHeaderBlock: violation, stream: state.id, answerable: false)
        return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
    }

    /// The end of a request head that passed a limit: the connection's
    /// delegate may answer it (a gRPC status); otherwise it is reset.
    private func refuseRequestHead(_ state: StreamState, _ violation: HTTP2HeaderLimitViolation, endStream: Bool) {
        state.receiving = state.receiving.headerBlockEnded(endStream: endStream)
        delegate?.http2(self, didRefuseHeaderBlock: violation, stream: state.id, answerable: true)
        // Unless the delegate answered (or reset) it.
        guard state.sending == .idle, let session, streams[state.id] != nil else { return }
        state.sending = .reset
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), state.id, HTTP2ErrorCode.enhanceYourCalm.rawValue)
    }

    func onFrameReceived(_ frame: nghttp2_frame) -> Int32 {
        let id = frame.hd.stream_id
        let endStream = frame.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch UInt32(frame.hd.type) {
        case NGHTTP2_HEADERS.rawValue:
            guard let state = streams[id] else { return 0 }
            if let violation = state.incomingBlock.violation {
                // Over a limit: a request head gets its answer; any other
                // block's stream was reset as it went over.
                if role == .server && frame.headers.cat == NGHTTP2_HCAT_REQUEST {
                    refuseRequestHead(state, violation, endStream: endStream)
                } else if endStream {
                    state.receiving = .ended
                }
                return 0
            }
            var headers = state.incomingHeaders
            state.incomingHeaders = HTTP2HeaderList()
            if role == .server && frame.headers.cat == NGHTTP2_HCAT_REQUEST {
                state.receiving = state.receiving.headerBlockEnded(endStream: endStream)
                if let streamDelegate = delegate?.http2(self, didReceiveRequest: headers, stream: id, endStream: endStream) {
                    state.delegate = streamDelegate
                } else if let session {
                    nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_REFUSED_STREAM.rawValue))
                }
                return 0
            }
            if state.receiving == .awaitingHead {
                // 1xx answers are informational; gRPC has no use for them.
                if let status = headers[":status"], status.hasPrefix("1") {
                    if endStream { state.receiving = .ended }
                    return 0
                }
                state.receiving = state.receiving.headerBlockEnded(endStream: endStream)
                state.delegate?.http2(self, stream: id, didReceiveHeaders: headers, isTrailers: false, endStream: endStream)
            } else {
                state.receiving = state.receiving.headerBlockEnded(endStream: endStream)
                state.delegate?.http2(self, stream: id, didReceiveHeaders: headers, isTrailers: true, endStream: endStream)
            }
            // The next response head or trailers of the connection fill this
            // list's storage again (a new one if the delegate kept it).
            headers.removeAll(keepingCapacity: true)
            spareHeaders = headers
        case NGHTTP2_DATA.rawValue:
            if endStream, let state = streams[id] {
                state.receiving = .ended
                state.delegate?.http2(self, didReceiveEndOfStream: id)
            }
        case NGHTTP2_SETTINGS.rawValue:
            if frame.hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 {
                delegate?.http2ConnectionDidReceiveSettings(self)
            }
        case NGHTTP2_PING.rawValue:
            if frame.hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0, awaitingPingAck {
                awaitingPingAck = false
                keepalive?.ackReceived()
            }
        case NGHTTP2_GOAWAY.rawValue:
            lifecycle.goAwayReceived()
            delegate?.http2(self, didReceiveGoAway: frame.goaway.last_stream_id, errorCode: HTTP2ErrorCode(frame.goaway.error_code))
        default:
            break
        }
        return 0
    }

    /// nghttp2 could not send a frame (for instance a header block over the
    /// size limit). For response HEADERS it does not close the stream by
    /// itself: reset it, or the stream and its call would stay forever.
    /// Not for a request's HEADERS: the peer never saw that stream
    /// (RST_STREAM on it would be a connection error there, RFC 9113 §5.1,
    /// costing every other stream on the connection), and nghttp2 closes it
    /// itself — with our reset's code when a reset cancelled the HEADERS
    /// still queued. Nor for a stream already reset here.
    func onFrameNotSent(_ frame: nghttp2_frame) -> Int32 {
        guard frame.hd.type == UInt8(NGHTTP2_HEADERS.rawValue), frame.headers.cat != NGHTTP2_HCAT_REQUEST,
              let session, let state = streams[frame.hd.stream_id], state.sending != .reset else { return 0 }
        state.sending = .reset
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), state.id, UInt32(NGHTTP2_INTERNAL_ERROR.rawValue))
        return 0
    }

    func onDataChunk(stream id: Int32, _ data: UnsafeRawBufferPointer) -> Int32 {
        guard let state = streams[id], let streamDelegate = state.delegate else {
            // Nobody will read these bytes: give the window back at once.
            if let session { nghttp2_session_consume(session, id, data.count) }
            return 0
        }
        state.unconsumed += data.count
        streamDelegate.http2(self, stream: id, didReceiveData: slice(of: data))
        return 0
    }

    /// `data` as a slice of the buffer being read when it lies inside it
    /// (DATA payloads do: nghttp2 does not copy them), else as a copy.
    private func slice(of data: UnsafeRawBufferPointer) -> ByteBuffer {
        if let inputBytes, let start = data.baseAddress, let base = inputBytes.baseAddress,
           start >= base, base.distance(to: start) + data.count <= inputBytes.count,
           let slice = input?.getSlice(at: input!.readerIndex + base.distance(to: start), length: data.count) {
            return slice
        }
        var buffer = context!.channel.allocator.buffer(capacity: data.count)
        buffer.writeBytes(data)
        return buffer
    }

    func onStreamClose(stream id: Int32, errorCode: UInt32) -> Int32 {
        guard let state = streams.removeValue(forKey: id) else { return 0 }
        if state.unconsumed > 0, let session {
            // The stream's unread bytes still occupy the connection window.
            nghttp2_session_consume_connection(session, state.unconsumed)
            state.unconsumed = 0
        }
        state.outbound.removeAll()
        queuedBytes -= state.outboundBytes
        state.outboundBytes = 0
        if role == .server && state.receiving != .ended { framePolicy.streamReset(id) }
        let reason: HTTP2StreamCloseReason
        if errorCode == 0 {
            reason = .finished
        } else if state.sending == .reset, let violation = state.incomingBlock.violation {
            reason = .headersTooLarge(violation)
        } else {
            reason = .reset(code: HTTP2ErrorCode(errorCode), local: state.sending == .reset)
        }
        pendingCloses.append((state, reason))
        return 0
    }

    /// nghttp2 asks for up to `length` body bytes of `stream`.
    func readOutbound(stream id: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let state = streams[id] else {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return 0
        }
        let written = state.outbound.drain(into: buffer, count: length)
        state.outboundBytes -= written
        queuedBytes -= written
        state.drained &+= written
        if written > 0 { pendingCredits.append((state, written)) }
        if state.sending == .ending && state.outbound.isEmpty {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            state.sending = .ended
            if role == .server && state.receiving != .ended { endedWithRequestOpen.append(id) }
            if state.trailersPending, let session {
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                state.trailersSubmitted()
                // The state's own copy: unchanged until the stream closes,
                // as nghttp2 reads it later.
                submitTrailers(session: session, stream: id, trailers: state.sentTrailers)
            }
            return written
        }
        if written == 0 {
            if state.sending == .body { state.sending = .bodyDeferred }
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return written
    }

    private func submitTrailers(session: OpaquePointer, stream id: Int32, trailers: HTTP2HeaderList) {
        let rv = withNameValuePairs(trailers) { nva, count in
            nghttp2_submit_trailer(session, id, nva, count)
        }
        if rv != 0 {
            nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_INTERNAL_ERROR.rawValue))
        }
    }
}
