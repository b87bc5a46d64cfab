#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A blocking TCP connection with a timeout on every step, for threads of
/// their own that may block (the tracing plugin's exporter), never for an
/// event loop. Every address the name resolves to is tried in turn. Writes
/// use MSG_NOSIGNAL, so a peer that resets never raises SIGPIPE.
public final class BlockingTCPConnection {
    private let fd: Int32

    public init(host: String, port: Int, timeoutMs: Int) throws(PosixError) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &list)
        guard resolved == 0, list != nil else {
            throw PosixError("getaddrinfo \(host)", code: 0, detail: "cannot resolve \(host): \(String(cString: gai_strerror(resolved)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = PosixError("connect \(host):\(port)", code: ECONNREFUSED)
        var next = list
        while let address = next {
            next = address.pointee.ai_next
            let fd = socket(address.pointee.ai_family, address.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), address.pointee.ai_protocol)
            guard fd >= 0 else {
                lastError = .last("socket")
                continue
            }
            var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
            let size = socklen_t(MemoryLayout<timeval>.size)
            guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, size) == 0, setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, size) == 0 else {
                lastError = .last("setsockopt")
                _ = close(fd)
                continue
            }
            if connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 {
                self.fd = fd
                return
            }
            lastError = .last("connect \(host):\(port)")
            _ = close(fd)
        }
        throw lastError
    }

    deinit { _ = close(fd) }

    /// Sends every byte (a timeout is EAGAIN).
    public func send(_ bytes: [UInt8]) throws(PosixError) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .last("send")
            }
            sent += n
        }
    }

    /// Reads what has arrived into `buffer`: the byte count, 0 when the
    /// peer closed.
    public func receive(into buffer: inout [UInt8]) throws(PosixError) -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n >= 0 { return n }
            if errno != EINTR { throw .last("recv") }
        }
    }
}
