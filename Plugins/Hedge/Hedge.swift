import FilterABI
import PluginKit

/// gRFC A6 hedging. Config: `max_attempts` (2..5, default 2),
/// `hedging_delay` (default 0: all attempts at once), and
/// `non_fatal_status_codes` (default none).
///
/// Each attempt, as it starts, schedules the next one `hedging_delay`
/// later while attempts remain. The first response head wins: the host
/// cancels the others (RST_STREAM CANCEL). A non-fatal status starts the
/// next attempt at once; any other status ends the call with it.
final class HedgeConfig {
    let maxAttempts: Int
    let delayMs: UInt32
    let nonFatal: Set<Int32>

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        maxAttempts = try config.int("max_attempts", default: 2, in: 2...5)
        delayMs = UInt32(try config.durationMs("hedging_delay", default: 0))
        nonFatal = try config.statusCodes("non_fatal_status_codes", default: [])
        guard !nonFatal.contains(0) else { throw .init("non_fatal_status_codes cannot hold OK") }
    }
}

/// Per call: how many attempts have started.
final class HedgeCall {
    var started = 0
}

enum HedgePlugin {
    static let descriptor = PluginDescriptor(name: "hedge", version: "1.0.0", kinds: .hedge, abiMinor: 0) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: ["max_attempts", "hedging_delay", "non_fatal_status_codes"], errorBuffer, errorSize) {
                config throws(PluginConfig.Invalid) in try HedgeConfig(config)
            }
        }
        d.configDestroy = { PluginSupport.release($0) }
        // The instance is the (immutable) config itself.
        d.instanceNew = { config, _, _ in config }
        d.callNew = { _, _ in PluginSupport.retain(HedgeCall()) }
        d.callDestroy = { _, state in PluginSupport.release(state) }
        d.onAttemptStart = { instance, state, call, _ in
            guard let config = PluginSupport.object(instance, as: HedgeConfig.self),
                  let hedge = PluginSupport.object(state, as: HedgeCall.self) else { return }
            hedge.started += 1
            if hedge.started < config.maxAttempts {
                _ = PluginHost.table?.pointee.call_start_attempt(call, config.delayMs)
            }
        }
        d.onAttemptDone = { instance, state, _, result, decision in
            guard let result, let decision, let config = PluginSupport.object(instance, as: HedgeConfig.self),
                  let hedge = PluginSupport.object(state, as: HedgeCall.self) else { return }
            if config.nonFatal.contains(result.pointee.grpc_status) {
                // Start the next attempt now (it replaces the scheduled one),
                // or wait for the attempts still running.
                if hedge.started < config.maxAttempts {
                    decision.pointee.retry = UInt32(MG_RETRY_AFTER)
                    decision.pointee.delay_ms = 0
                }
            } else {
                decision.pointee.retry = UInt32(MG_RETRY_FINISH)
            }
        }
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    HedgePlugin.descriptor.entry(host)
}
