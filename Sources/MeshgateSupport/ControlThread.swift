import NIOCore
import NIOPosix

/// The ABI's "control thread": one thread, never an event loop of the data
/// path, on which plugin configs are created and destroyed and their timers
/// fire. Running them all on one thread means a timer never races with its
/// config's destruction.
public enum ControlThread {
    public static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    public static var loop: EventLoop { group.next() }

    /// Runs `body` on the control thread and waits for it (inline when
    /// already there).
    public static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        if loop.inEventLoop { return body() }
        // The control thread only ever runs short plugin work; waiting here
        // (from main, a reload, or shutdown) cannot deadlock it.
        return try! loop.submit(body).wait()
    }
}
