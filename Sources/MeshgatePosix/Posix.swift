#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A libc call that failed: the call, what it was about, and errno (read
/// at once, before anything else can change it).
public struct PosixError: Error, CustomStringConvertible, Sendable, Equatable {
    public let call: String
    public let code: Int32
    /// Said instead of strerror when the failure is not an errno (a
    /// directory owned by someone else, a name that does not resolve).
    public let detail: String?

    public init(_ call: String, code: Int32, detail: String? = nil) {
        self.call = call
        self.code = code
        self.detail = detail
    }

    /// strerror's text (or the detail).
    public var reason: String { detail ?? Posix.describe(errno: code) }
    public var description: String { "\(call): \(reason)" }

    static func last(_ call: String) -> PosixError { PosixError(call, code: errno) }
}

/// The one place Meshgate calls libc functions that can fail (files,
/// directories, dlopen, signals, descriptors, clocks, sleeping): each
/// wrapper checks the result and turns errno into a thrown `PosixError` at
/// once, retrying EINTR where that is the right answer. Nothing else
/// imports Glibc (`ModuleBoundaryTests` checks).
public enum Posix {
    // MARK: Files

    /// A file's identity and times, for "has it changed?".
    public struct FileStatus: Sendable, Equatable {
        public var inode: UInt64
        public var size: Int64
        public var modifiedNanos: Int64
        public var changedNanos: Int64
        public var isDirectory: Bool
        public var owner: UInt32
        /// The permission bits (0o777).
        public var permissions: UInt32
    }

    public static func status(_ path: String) throws(PosixError) -> FileStatus {
        var info = stat()
        guard stat(path, &info) == 0 else { throw .last("stat \(path)") }
        return FileStatus(info)
    }

    /// The whole file. A directory, or a read that fails halfway, is an
    /// error (never a short file passed off as the whole); so is a file
    /// of more than `maxBytes` (EFBIG), found before it is read, or while
    /// it is read when it grows meanwhile: nothing past the limit is kept.
    public static func readFile(_ path: String, maxBytes: Int = .max) throws(PosixError) -> [UInt8] {
        let fd = try openRetrying(path, O_RDONLY | O_CLOEXEC, mode: 0)
        defer { _ = close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .last("fstat \(path)") }
        guard info.st_mode & S_IFMT != S_IFDIR else { throw PosixError("read \(path)", code: EISDIR) }
        let tooLarge = { (size: Int64) in
            PosixError("read \(path)", code: EFBIG, detail: "the file is \(size) bytes, over the limit of \(maxBytes) bytes")
        }
        guard info.st_size <= Int64(clamping: maxBytes) else { throw tooLarge(Int64(info.st_size)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(max(info.st_size, 0)))
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .last("read \(path)")
            }
            if n == 0 { return bytes }
            guard bytes.count + n <= maxBytes else { throw tooLarge(Int64(bytes.count + n)) }
            bytes.append(contentsOf: chunk[0..<n])
        }
    }

    /// Writes `bytes` to a new file (it must not exist: O_EXCL), flushed to
    /// disk, or removes what was written and throws.
    public static func writeNewFile(_ path: String, _ bytes: [UInt8], permissions: UInt32 = 0o600) throws(PosixError) {
        let fd = try openRetrying(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: mode_t(permissions))
        do throws(PosixError) {
            try bytes.withUnsafeBytes { buffer in Result { () throws(PosixError) in try writeAll(fd, buffer, what: path) } }.get()
            guard fsync(fd) == 0 else { throw PosixError.last("fsync \(path)") }
        } catch {
            _ = close(fd)
            _ = unlink(path)
            throw error
        }
        // A deferred write error shows at close.
        guard close(fd) == 0 else {
            let error = PosixError.last("close \(path)")
            _ = unlink(path)
            throw error
        }
    }

    public static func rename(_ from: String, to: String) throws(PosixError) {
        guard Glibc.rename(from, to) == 0 else { throw .last("rename \(from) to \(to)") }
    }

    /// Removes a file; one that is already gone is no error.
    public static func remove(_ path: String) throws(PosixError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw .last("unlink \(path)") }
    }

    /// A directory only this user can use: made (0700) when missing; when
    /// it exists it must be a real directory (not a symlink), owned by this
    /// user, with no access for group or others — else another local user
    /// could plant files in it.
    public static func privateDirectory(_ path: String) throws(PosixError) {
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw .last("mkdir \(path)") }
        var info = stat()
        guard lstat(path, &info) == 0 else { throw .last("lstat \(path)") }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw PosixError("lstat \(path)", code: ENOTDIR, detail: "not a directory") }
        guard info.st_uid == getuid() else {
            throw PosixError("lstat \(path)", code: EPERM, detail: "owned by uid \(info.st_uid), not by this user (\(getuid()))")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw PosixError("lstat \(path)", code: EPERM, detail: "open to other users (mode \(String(info.st_mode & 0o777, radix: 8)))")
        }
    }

    /// This process's executable (/proc/self/exe).
    public static func executablePath() throws(PosixError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count)
        guard n >= 0 else { throw .last("readlink /proc/self/exe") }
        guard n < buffer.count else { throw PosixError("readlink /proc/self/exe", code: ENAMETOOLONG) }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func openRetrying(_ path: String, _ flags: Int32, mode: mode_t) throws(PosixError) -> Int32 {
        while true {
            let fd = open(path, flags, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw .last("open \(path)") }
        }
    }

    // MARK: Descriptors

    /// Writes every byte, retrying EINTR and short writes.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: String = "") throws(PosixError) {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw .last(what.isEmpty ? "write fd \(fd)" : "write \(what)")
            }
            guard n > 0 else { throw PosixError(what.isEmpty ? "write fd \(fd)" : "write \(what)", code: EIO, detail: "wrote nothing") }
            offset += n
        }
    }

    public static let standardError: Int32 = 2

    // MARK: Shared objects

    /// dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE): symbols resolved now,
    /// kept private, never unmapped (a Swift runtime crashes when its image
    /// goes away). Throws with dlerror's text.
    public static func openSharedObject(_ path: String) throws(PosixError) -> UnsafeMutableRawPointer {
        _ = dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            throw PosixError("dlopen", code: 0, detail: dlerror().map { String(cString: $0) } ?? "unknown dlopen error")
        }
        return handle
    }

    /// The address of `name` in a handle from `openSharedObject`, or nil
    /// when it has no such symbol.
    public static func symbol(_ name: String, in handle: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        _ = dlerror()
        return dlsym(handle, name)
    }

    // MARK: Process

    /// This machine's host name (gethostname), lower-case; nil if unknown.
    public static var hostName: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).lowercased()
        return name.isEmpty ? nil : name
    }

    /// The address `host` stands for when read as a number, exactly as
    /// getaddrinfo reads it with AI_NUMERICHOST (what a dial does before
    /// any lookup): the inet_aton forms of IPv4 (`127.1`, `2130706433`,
    /// `0x7f.1`, `0177.0.0.1`, `0`), and IPv6 with an optional zone
    /// (`fe80::1%lo`). 4 bytes for IPv4, 16 for IPv6 (an IPv4-mapped one
    /// included); nil when `host` is not numeric (a name).
    public static func numericHostAddress(_ host: String) -> [UInt8]? {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(first) }
        guard let address = first.pointee.ai_addr else { return nil }
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                withUnsafeBytes(of: v4.pointee.sin_addr) { Array($0) }
            }
        case AF_INET6:
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                withUnsafeBytes(of: v6.pointee.sin6_addr) { Array($0) }
            }
        default:
            return nil
        }
    }

    public static var userID: UInt32 { getuid() }
    public static var processID: Int32 { getpid() }

    /// An environment variable's value; nil when unset or empty.
    public static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        let text = String(cString: value)
        return text.isEmpty ? nil : text
    }

    /// The signals a server handles.
    public enum Signal {
        public static let terminate = SIGTERM
        public static let interrupt = SIGINT
        public static let hangUp = SIGHUP
    }

    /// SIG_IGN for `signal` (a DispatchSource then sees it instead).
    public static func ignoreSignal(_ number: Int32) throws(PosixError) {
        // SIG_ERR is the handler address -1.
        if let previous = Glibc.signal(number, SIG_IGN), unsafeBitCast(previous, to: Int.self) == -1 { throw .last("signal \(number)") }
    }

    public static func exit(_ code: Int32) -> Never { Glibc.exit(code) }

    /// RLIMIT_NOFILE: how many descriptors the process may have open. The
    /// soft limit is the one enforced; the hard limit is how far an
    /// unprivileged process may raise it. `UInt64.max` is RLIM_INFINITY.
    public struct OpenFileLimit: Sendable, Equatable {
        public var soft: UInt64
        public var hard: UInt64

        public init(soft: UInt64, hard: UInt64) {
            self.soft = soft
            self.hard = hard
        }
    }

    public static func openFileLimit() throws(PosixError) -> OpenFileLimit {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw .last("getrlimit RLIMIT_NOFILE") }
        return OpenFileLimit(limit)
    }

    /// Raises the soft open-file limit to the hard one (a server holding a
    /// connection per client needs more than the usual soft 1024) and
    /// returns the limits before and after. Linux refuses RLIM_INFINITY for
    /// descriptors; a hard limit of "unlimited" is then read as
    /// /proc/sys/fs/nr_open, the kernel's ceiling.
    public static func raiseOpenFileLimit() throws(PosixError) -> (before: OpenFileLimit, after: OpenFileLimit) {
        let before = try openFileLimit()
        guard before.soft < before.hard else { return (before, before) }
        var target = before.hard
        if target == UInt64.max {
            let text = (try? readFile("/proc/sys/fs/nr_open")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            target = UInt64(text.filter { $0.isNumber }) ?? 1_048_576
        }
        var limit = rlimit(rlim_cur: rlim_t(target), rlim_max: before.hard == UInt64.max ? rlim_t.max : rlim_t(before.hard))
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw .last("setrlimit RLIMIT_NOFILE \(target)") }
        return (before, try openFileLimit())
    }

    /// Lowers the soft open-file limit (tests start from a small one).
    public static func setOpenFileSoftLimit(_ soft: UInt64) throws(PosixError) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw .last("getrlimit RLIMIT_NOFILE") }
        limit.rlim_cur = rlim_t(soft)
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw .last("setrlimit RLIMIT_NOFILE \(soft)") }
    }

    // MARK: Clocks

    /// Wall-clock time (CLOCK_REALTIME) in nanoseconds since the epoch,
    /// for timestamps; durations use the monotonic clock (NIODeadline).
    public static func wallClockNanos() -> Int64 {
        var ts = timespec()
        // Fails only for an unknown clock id or a bad pointer.
        precondition(clock_gettime(CLOCK_REALTIME, &ts) == 0, "clock_gettime(CLOCK_REALTIME)")
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Sleeps the calling thread for `milliseconds`, through interruptions.
    public static func sleep(milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    // MARK: Errors and memory

    /// strerror's text for an errno value.
    public static func describe(errno code: Int32) -> String { String(cString: strerror(code)) }

    /// The `count` bytes at `a` and `b` are equal (memcmp).
    public static func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
        count == 0 || memcmp(a, b, count) == 0
    }
}

extension Posix.FileStatus {
    init(_ info: stat) {
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modifiedNanos = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        changedNanos = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        isDirectory = info.st_mode & S_IFMT == S_IFDIR
        owner = info.st_uid
        permissions = UInt32(info.st_mode & 0o777)
    }
}

extension Posix.OpenFileLimit {
    init(_ limit: rlimit) {
        soft = limit.rlim_cur == rlim_t.max ? UInt64.max : UInt64(limit.rlim_cur)
        hard = limit.rlim_max == rlim_t.max ? UInt64.max : UInt64(limit.rlim_max)
    }
}
