#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// glibc's per-thread cache of freed blocks (tcache) keeps 7 blocks of
/// each size by default. An event loop starts and ends calls in bursts as
/// large as its concurrency (hundreds of calls), so the call objects of a
/// burst overflow it and go through malloc's slow path (`_int_malloc`,
/// `_int_free`, consolidation): measured at 0.3–0.6 µs of CPU per RPC
/// under the bench's load. With a larger cache they come back from the
/// thread's own list. The cache is read from GLIBC_TUNABLES once, when
/// the process starts, so `meshgate run` sets it and executes itself again
/// (same pid, arguments and environment) before anything else happens.
/// A GLIBC_TUNABLES that already sets `glibc.malloc.tcache_count` is the
/// operator's choice and is kept; MESHGATE_MALLOC_TUNING=off leaves glibc
/// as it is.
public enum MallocTuning {
    /// Freed blocks kept per size and thread (glibc accepts up to 65,535).
    /// The blocks are the burst's own, which the arena would otherwise
    /// hold in its free lists: the peak RSS does not grow with it.
    public static let tcacheCount = 1024
    static let tunable = "glibc.malloc.tcache_count"

    /// The GLIBC_TUNABLES value to run with, or nil when the current one
    /// must be kept (already sets the tunable, or tuning is off).
    public static func tunables(current: String?, tuning: String?) -> String? {
        if tuning == "off" { return nil }
        if let current, current.contains(tunable + "=") { return nil }
        let setting = "\(tunable)=\(tcacheCount)"
        guard let current, !current.isEmpty else { return setting }
        return current + ":" + setting
    }

    /// Executes this program again with the tunable set, unless it is set
    /// (or tuning is off); returns when it does not (or when exec fails:
    /// the gateway then runs with glibc's defaults).
    public static func applyByReexecuting() {
        #if canImport(Glibc)
        let current = getenv("GLIBC_TUNABLES").map { String(cString: $0) }
        let tuning = getenv("MESHGATE_MALLOC_TUNING").map { String(cString: $0) }
        guard let value = tunables(current: current, tuning: tuning) else { return }
        guard setenv("GLIBC_TUNABLES", value, 1) == 0 else { return }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed (no /proc, a sandbox): run as we are.
        if let current { setenv("GLIBC_TUNABLES", current, 1) } else { unsetenv("GLIBC_TUNABLES") }
        #endif
    }
}
