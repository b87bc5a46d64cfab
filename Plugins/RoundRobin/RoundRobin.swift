import FilterABI
import PluginKit

/// The default balancer: round robin over the usable endpoints, and smooth
/// weighted round robin (nginx's algorithm) when their weights differ, so
/// that weights 1, 1, 2 give A, C, B, C, ... — every cycle exact, never
/// bursts. Takes no config.
final class RoundRobinInstance {
    var version: UInt64 = .max
    var cursor = 0
    var currentWeights: [Int] = []

    func update(_ list: mg_endpoint_list) {
        version = list.version
        currentWeights = Array(repeating: 0, count: list.count)
        if list.count > 0 { cursor %= list.count } else { cursor = 0 }
    }

    func pick(_ list: mg_endpoint_list, avoid: UInt64) -> Int? {
        if list.version != version || currentWeights.count != list.count { update(list) }
        let items = UnsafeBufferPointer(start: list.items, count: list.count)
        // No arrays: this runs for every attempt of every call.
        func usable(_ i: Int) -> Bool { items[i].healthy != 0 && items[i].ejected == 0 }
        // Avoid the endpoint the previous attempt used, unless it is the only usable one.
        let avoiding = items.indices.contains { usable($0) && items[$0].id != avoid }
        func allowed(_ i: Int) -> Bool { usable(i) && (!avoiding || items[i].id != avoid) }
        guard let first = items.indices.first(where: allowed) else { return nil }
        let weight = items[first].weight
        if !items.indices.contains(where: { allowed($0) && items[$0].weight != weight }) {
            for step in 0..<items.count {
                let i = (cursor + step) % items.count
                if allowed(i) {
                    cursor = (i + 1) % items.count
                    return i
                }
            }
            return first
        }
        var total = 0
        var best = first
        for i in items.indices where allowed(i) {
            currentWeights[i] += Int(items[i].weight)
            total += Int(items[i].weight)
            if currentWeights[i] > currentWeights[best] { best = i }
        }
        currentWeights[best] -= total
        return best
    }
}

enum RoundRobinPlugin {
    /// Static storage for the life of the process, as the ABI requires.
    /// Static storage for the life of the process, as the ABI requires.
    nonisolated(unsafe) static let descriptor: UnsafePointer<mg_plugin> = {
        var d = PluginSupport.descriptor(name: "round_robin", version: "1.0.0", kinds: MG_KIND_BALANCER)
        d.config_new = { _, json, error, size in PluginSupport.acceptEmptyConfig("round_robin", json, error, size) }
        d.instance_new = { _, _, _ in PluginSupport.retain(RoundRobinInstance()) }
        d.instance_destroy = { PluginSupport.release($0) }
        d.lb_update = { instance, list in
            guard let instance, let list else { return }
            Unmanaged<RoundRobinInstance>.fromOpaque(instance).takeUnretainedValue().update(list.pointee)
        }
        d.lb_pick = { instance, _, request, list, chosen in
            guard let instance, let list, let chosen else { return -1 }
            let avoid = request?.pointee.avoid_endpoint ?? 0
            guard let index = Unmanaged<RoundRobinInstance>.fromOpaque(instance).takeUnretainedValue().pick(list.pointee, avoid: avoid) else {
                return -1
            }
            chosen.pointee = UInt32(index)
            return 0
        }
        return PluginSupport.publish(d)
    }()
}

/// The plugin's one exported symbol (MG_PLUGIN_ENTRY_V1).
@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    PluginHost.accept(host) ? RoundRobinPlugin.descriptor : nil
}
