import NIOConcurrencyHelpers
import NIOCore
import MeshgateSupport
import MeshgateUpstream

/// The host's side of one plugin config (`mg_config_ctx *`): its timers,
/// and the ejection registry its plugin may write to.
///
/// `@unchecked Sendable`: the timer table is behind `lock`; everything else
/// is immutable.
public final class PluginConfigContext: @unchecked Sendable {
    public let ejections: EjectionRegistry
    private let lock = NIOLock()
    private var timers: [UInt64: RepeatedTask] = [:]
    private var nextTimer: UInt64 = 1
    private var closed = false

    public init(ejections: EjectionRegistry) {
        self.ejections = ejections
    }

    public var opaque: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    public static func from(_ handle: OpaquePointer) -> PluginConfigContext {
        Unmanaged<PluginConfigContext>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    }

    /// Runs `fire(user)` on the control thread after `delayMs` (and every
    /// `delayMs` after that when `repeats`).
    public func startTimer(delayMs: UInt32, repeats: Bool, fire: @escaping @convention(c) (UnsafeMutableRawPointer?) -> Void,
                    user: UnsafeMutableRawPointer?) -> UInt64 {
        let userBits = user.map { UInt(bitPattern: $0) }
        let delay = TimeAmount.milliseconds(Int64(max(delayMs, 1)))
        return lock.withLock { () -> UInt64 in
            guard !closed else { return 0 }
            let id = nextTimer
            nextTimer += 1
            let task = ControlThread.loop.scheduleRepeatedTask(initialDelay: delay, delay: delay) { [weak self] task in
                guard let self, self.isLive(id) else { return task.cancel() }
                if !repeats { self.forget(id) }
                fire(userBits.flatMap { UnsafeMutableRawPointer(bitPattern: $0) })
            }
            timers[id] = task
            return id
        }
    }

    private func isLive(_ id: UInt64) -> Bool { lock.withLock { timers[id] != nil } }

    private func forget(_ id: UInt64) {
        lock.withLock { timers.removeValue(forKey: id) }?.cancel()
    }

    public func cancelTimer(_ id: UInt64) { forget(id) }

    public func cancelAllTimers() {
        let all = lock.withLock { () -> [RepeatedTask] in
            closed = true
            defer { timers.removeAll() }
            return Array(timers.values)
        }
        for task in all { task.cancel() }
    }
}
