/// Per-stream bookkeeping of an `HTTP2Connection`. Where the stream is in
/// its life is two small values, one per direction (`Receiving`,
/// `Sending`), in place of seven flags.
final class StreamState {
    /// What the peer has sent on the stream.
    enum Receiving: UInt8, Equatable {
        /// No head yet (a client stream before its response head; 1xx
        /// heads do not count).
        case awaitingHead
        /// The head arrived; DATA or trailers may follow.
        case open
        /// The peer ended its side (END_STREAM received).
        case ended

        /// A header block ended: the head (unless one came before) or the
        /// trailers; with END_STREAM the peer's side is over.
        func headerBlockEnded(endStream: Bool) -> Receiving {
            endStream ? .ended : (self == .awaitingHead ? .open : self)
        }
    }

    /// What we have submitted on the stream.
    enum Sending: UInt8, Equatable {
        /// Nothing yet (a server stream before its response head).
        case idle
        /// The head is submitted with a data provider: body bytes may be
        /// queued (`send`) and nghttp2 pulls them as the window allows.
        case body
        /// As `body`, but nghttp2 found the queue empty and waits for
        /// `nghttp2_session_resume_data`.
        case bodyDeferred
        /// `sendEnd` was called: the queue drains, then the trailers or
        /// END_STREAM on the last DATA frame.
        case ending
        /// END_STREAM is submitted (with the head, or after the queue and
        /// trailers), or the head was refused: nothing more is sent.
        case ended
        /// We reset the stream (RST_STREAM submitted): nothing more is
        /// sent, and its close is ours.
        case reset

        /// Body bytes and the end may still be queued.
        var takesBody: Bool { self == .body || self == .bodyDeferred }
    }

    private(set) var id: Int32
    var delegate: HTTP2StreamDelegate?
    /// Header fields of the HEADERS frame being received.
    var incomingHeaders = HTTP2HeaderList()
    /// That block's size and field count against the connection's limits.
    var incomingBlock = HTTP2HeaderBlockMeter()
    var receiving = Receiving.awaitingHead
    var sending = Sending.idle
    var outbound = ByteChunkQueue()
    var outboundBytes = 0
    /// The header blocks submitted to nghttp2 without copies (see
    /// `withNameValuePairs`): they stay unchanged until the stream closes.
    /// Their storage is the state's own, kept across reuses, so copying a
    /// block into it does not allocate once warm; and the caller's list
    /// (often an upstream's response block, whose storage that connection
    /// reuses for its next block) is not held until the stream closes,
    /// which made the upstream connection allocate anew for every block.
    private(set) var sentHead = HTTP2HeaderList()
    /// The trailers, copied in by `keepTrailers` when the body ends, sent
    /// once the queued data has left (`trailersPending`).
    private(set) var sentTrailers = HTTP2HeaderList()
    private(set) var trailersPending = false
    /// DATA bytes received and not yet given back as window credit.
    var unconsumed = 0
    /// Outbound bytes handed to nghttp2 so far, and what SendStallWatch
    /// saw at its last check.
    var drained = 0
    var drainedAtCheck = 0
    var stalledChecks = 0

    init(id: Int32, delegate: HTTP2StreamDelegate?) {
        self.id = id
        self.delegate = delegate
    }

    /// Makes a closed stream's state new for stream `id` (see
    /// HTTP2Connection.recycle: only when nothing else refers to it).
    func reuse(id: Int32, delegate: HTTP2StreamDelegate?) {
        self.id = id
        self.delegate = delegate
        // Spare states wait for the next stream of the loop: a large head's
        // storage is not kept for it (1,024 spares of 60 KiB heads would
        // be 60 MiB no cap counts).
        sentHead.removeAll(keepingCapacityUpTo: 4096)
        sentTrailers.removeAll(keepingCapacityUpTo: 4096)
        trailersPending = false
        incomingHeaders = HTTP2HeaderList()
        incomingBlock.reset()
        receiving = .awaitingHead
        sending = .idle
        outbound.removeAll()
        outboundBytes = 0
        unconsumed = 0
        drained = 0
        drainedAtCheck = 0
        stalledChecks = 0
    }

    /// A client stream learns its id when nghttp2 accepts its head.
    func assign(id: Int32) { self.id = id }

    /// Copies `headers` into the state's own storage, for a NO_COPY submit.
    func keepSentHead(_ headers: HTTP2HeaderList) {
        sentHead.removeAll(keepingCapacity: true)
        sentHead.append(contentsOf: headers)
    }

    /// Copies the trailers to send after the body into the state's own
    /// storage; nil: the body ends with END_STREAM on its last DATA frame.
    func keepTrailers(_ trailers: HTTP2HeaderList?) {
        sentTrailers.removeAll(keepingCapacity: true)
        guard let trailers else {
            trailersPending = false
            return
        }
        sentTrailers.append(contentsOf: trailers)
        trailersPending = true
    }

    /// The trailers went to nghttp2 (which reads them from `sentTrailers`
    /// until the stream closes).
    func trailersSubmitted() { trailersPending = false }
}
