import FilterABI
import PluginKit

/// Uniform random choice among the usable endpoints (avoiding the one that
/// just failed when another exists). Takes no config.
enum RandomBalancer {
    static func pick(_ list: mg_endpoint_list, avoid: UInt64) -> Int? {
        let items = UnsafeBufferPointer(start: list.items, count: list.count)
        var candidates = items.indices.filter { items[$0].healthy != 0 && items[$0].ejected == 0 && items[$0].id != avoid }
        if candidates.isEmpty { candidates = items.indices.filter { items[$0].healthy != 0 && items[$0].ejected == 0 } }
        return candidates.randomElement()
    }

    static let descriptor = PluginDescriptor(name: "random", version: "1.0.0", kinds: .balancer, abiMinor: 0) { d in
        d.configNew = { _, json, error, size in PluginSupport.acceptEmptyConfig("random", json, error, size) }
        d.lbPick = { _, _, request, list, chosen in
            guard let list, let chosen, let index = pick(list.pointee, avoid: request?.pointee.avoid_endpoint ?? 0) else { return -1 }
            chosen.pointee = UInt32(index)
            return 0
        }
    }
}

/// The plugin's one exported symbol (MG_PLUGIN_ENTRY_V1).
@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    RandomBalancer.descriptor.entry(host)
}
