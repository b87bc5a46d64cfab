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
    static let descriptor = PluginDescriptor(name: "round_robin", version: "1.0.0", kinds: .balancer, abiMinor: 0) { d in
        d.configNew = { _, json, error, size in PluginSupport.acceptEmptyConfig("round_robin", json, error, size) }
        d.instanceNew = { _, _, _ in PluginSupport.retain(RoundRobinInstance()) }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.lbUpdate = { instance, list in
            guard let lb = PluginSupport.object(instance, as: RoundRobinInstance.self), let list else { return }
            lb.update(list.pointee)
        }
        d.lbPick = { instance, _, request, list, chosen in
            guard let lb = PluginSupport.object(instance, as: RoundRobinInstance.self), let list, let chosen,
                  let index = lb.pick(list.pointee, avoid: request?.pointee.avoid_endpoint ?? 0) else { return -1 }
            chosen.pointee = UInt32(index)
            return 0
        }
    }
}

/// The plugin's one exported symbol (MG_PLUGIN_ENTRY_V1).
@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    RoundRobinPlugin.descriptor.entry(host)
}
