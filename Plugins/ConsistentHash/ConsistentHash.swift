import FilterABI
import PluginKit

/// Ring hash with XXH64 (as gRFC A42): each endpoint owns a fixed number of
/// points per unit of weight (nginx's ketama uses 160), so its points never
/// depend on who else is in the cluster; a call goes to the first usable
/// endpoint clockwise from the hash of its `header`. When an endpoint
/// leaves, exactly the keys it owned move. A call without the header gets a
/// random endpoint.
/// Config: `{ header: x-user-id, points_per_weight: 160 }` (16..1024).
final class HashConfig {
    let header: String
    let pointsPerWeight: Int
    init(header: String, pointsPerWeight: Int) {
        self.header = header
        self.pointsPerWeight = pointsPerWeight
    }
}

final class RingInstance {
    let config: HashConfig
    private var signature = ""
    private var ring: [(hash: UInt64, endpoint: Int)] = []

    init(config: HashConfig) { self.config = config }

    /// Rebuilds the ring when membership or weights changed (not on health
    /// changes: unusable endpoints are skipped when walking instead).
    func update(_ list: mg_endpoint_list) {
        let items = UnsafeBufferPointer(start: list.items, count: list.count)
        let addresses = items.map { String(decoding: UnsafeRawBufferPointer(start: $0.address.ptr, count: $0.address.len), as: UTF8.self) }
        let newSignature = zip(addresses, items).map { "\($0)*\($1.weight)" }.joined(separator: ",")
        guard newSignature != signature else { return }
        signature = newSignature
        ring.removeAll(keepingCapacity: true)
        for (i, address) in addresses.enumerated() {
            let points = config.pointsPerWeight * Int(items[i].weight)
            for n in 0..<points { ring.append((XXH64.hash("\(address)_\(n)"), i)) }
        }
        ring.sort { $0.hash < $1.hash }
    }

    func pick(_ list: mg_endpoint_list, key: UInt64?, avoid: UInt64) -> Int? {
        update(list)
        let items = UnsafeBufferPointer(start: list.items, count: list.count)
        func usable(_ i: Int, strict: Bool) -> Bool {
            items[i].healthy != 0 && items[i].ejected == 0 && (!strict || items[i].id != avoid)
        }
        guard let key, !ring.isEmpty else {
            let candidates = items.indices.filter { usable($0, strict: true) }
            return (candidates.isEmpty ? items.indices.filter { usable($0, strict: false) } : candidates).randomElement()
        }
        var low = 0, high = ring.count
        while low < high {
            let mid = (low + high) / 2
            if ring[mid].hash < key { low = mid + 1 } else { high = mid }
        }
        for strict in [true, false] {
            for step in 0..<ring.count {
                let i = ring[(low + step) % ring.count].endpoint
                if usable(i, strict: strict) { return i }
            }
        }
        return nil
    }
}

enum ConsistentHashPlugin {
    static let descriptor = PluginDescriptor(name: "consistent_hash", version: "1.0.0", kinds: .balancer, abiMinor: 0) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: ["header", "points_per_weight"], errorBuffer, errorSize) { config throws(PluginConfig.Invalid) in
                guard let header = config.string("header"), !header.isEmpty else {
                    throw .init("`header` is required: the request header whose value is hashed")
                }
                let points = try config.int("points_per_weight", default: 160, in: 16...1024)
                return HashConfig(header: header.lowercased(), pointsPerWeight: points)
            }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, _ in
            guard let c = PluginSupport.object(config, as: HashConfig.self) else { return nil }
            return PluginSupport.retain(RingInstance(config: c))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.lbUpdate = { instance, list in
            guard let ring = PluginSupport.object(instance, as: RingInstance.self), let list else { return }
            ring.update(list.pointee)
        }
        d.lbPick = { instance, call, request, list, chosen in
            guard let ring = PluginSupport.object(instance, as: RingInstance.self), let list, let chosen else { return -1 }
            let key = PluginHost.requestHeader(call, ring.config.header).map { XXH64.hash($0) }
            guard let index = ring.pick(list.pointee, key: key, avoid: request?.pointee.avoid_endpoint ?? 0) else { return -1 }
            chosen.pointee = UInt32(index)
            return 0
        }
    }
}

/// The plugin's one exported symbol (MG_PLUGIN_ENTRY_V1).
@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    ConsistentHashPlugin.descriptor.entry(host)
}
