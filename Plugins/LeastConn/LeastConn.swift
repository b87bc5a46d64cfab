import FilterABI
import PluginKit

/// Least connections: the usable endpoint with the fewest attempts in flight
/// from this event loop, relative to its weight. With `choices: 2` it is
/// power-of-two-choices (two random candidates, the less loaded wins), which
/// avoids herding on one endpoint when counts are stale.
/// Config: `{ choices: 0 }` (0 = compare all, the default; 2..8 = sample).
final class LeastConnConfig {
    let choices: Int
    init(choices: Int) { self.choices = choices }
}

final class LeastConnInstance {
    let choices: Int
    var tieBreak = 0
    init(choices: Int) { self.choices = choices }

    func pick(_ list: mg_endpoint_list, avoid: UInt64) -> Int? {
        let items = UnsafeBufferPointer(start: list.items, count: list.count)
        var candidates = items.indices.filter { items[$0].healthy != 0 && items[$0].ejected == 0 && items[$0].id != avoid }
        if candidates.isEmpty { candidates = items.indices.filter { items[$0].healthy != 0 && items[$0].ejected == 0 } }
        guard !candidates.isEmpty else { return nil }
        if choices >= 2 && candidates.count > choices {
            var sampled: [Int] = []
            while sampled.count < choices {
                let c = candidates[Int.random(in: 0..<candidates.count)]
                if !sampled.contains(c) { sampled.append(c) }
            }
            candidates = sampled
        }
        // Fewest in flight per unit of weight; ties rotate so that an idle
        // cluster still spreads.
        tieBreak &+= 1
        var best = candidates[tieBreak % candidates.count]
        for i in candidates {
            let a = UInt64(items[i].in_flight) * UInt64(items[best].weight)
            let b = UInt64(items[best].in_flight) * UInt64(items[i].weight)
            if a < b { best = i }
        }
        return best
    }
}

enum LeastConnPlugin {
    static let descriptor = PluginDescriptor(name: "least_conn", version: "1.0.0", kinds: .balancer, abiMinor: 0) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: ["choices"], errorBuffer, errorSize) { config throws(PluginConfig.Invalid) in
                let choices = try config.int("choices", default: 0, in: 0...8)
                guard choices != 1 else { throw .init("choices must be 0 (compare all) or 2 to 8, got 1") }
                return LeastConnConfig(choices: choices)
            }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, _ in
            let choices = PluginSupport.object(config, as: LeastConnConfig.self)?.choices ?? 0
            return PluginSupport.retain(LeastConnInstance(choices: choices))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.lbPick = { instance, _, request, list, chosen in
            guard let lb = PluginSupport.object(instance, as: LeastConnInstance.self), let list, let chosen,
                  let index = lb.pick(list.pointee, avoid: request?.pointee.avoid_endpoint ?? 0) else { return -1 }
            chosen.pointee = UInt32(index)
            return 0
        }
    }
}

/// The plugin's one exported symbol (MG_PLUGIN_ENTRY_V1).
@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    LeastConnPlugin.descriptor.entry(host)
}
