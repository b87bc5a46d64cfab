import FilterABI

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
        func usable(_ e: mg_endpoint) -> Bool { e.healthy != 0 && e.ejected == 0 }
        var allowed = items.indices.filter { usable(items[$0]) && items[$0].id != avoid }
        if allowed.isEmpty { allowed = items.indices.filter { usable(items[$0]) } }
        guard let first = allowed.first else { return nil }
        let weight = items[first].weight
        if allowed.allSatisfy({ items[$0].weight == weight }) {
            for step in 0..<items.count {
                let i = (cursor + step) % items.count
                if allowed.contains(i) {
                    cursor = (i + 1) % items.count
                    return i
                }
            }
            return first
        }
        var total = 0
        var best = first
        for i in allowed {
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
    nonisolated(unsafe) static let descriptor: UnsafePointer<mg_plugin> = {
        var d = mg_plugin()
        d.size = UInt32(MemoryLayout<mg_plugin>.size)
        d.abi_major = UInt32(MG_ABI_MAJOR)
        d.abi_minor = 0
        d.kinds = UInt32(MG_KIND_BALANCER)
        d.name = UnsafeRawPointer(("round_robin" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
        d.version = UnsafeRawPointer(("1.0.0" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
        d.config_new = { _, json, error, errorSize in
            let text = String(decoding: UnsafeRawBufferPointer(start: json.ptr, count: json.len), as: UTF8.self)
            let trimmed = text.filter { !$0.isWhitespace }
            guard trimmed == "{}" || trimmed.isEmpty || trimmed == "null" else {
                if let error, errorSize > 0 {
                    let message = Array("round_robin takes no config (got \(text))".utf8CString.prefix(errorSize - 1)) + [0]
                    error.update(from: message, count: message.count)
                }
                return nil
            }
            // No state: any non-NULL pointer says "accepted".
            return UnsafeMutableRawPointer(bitPattern: 1)
        }
        d.instance_new = { _, _, _ in
            UnsafeMutableRawPointer(Unmanaged.passRetained(RoundRobinInstance()).toOpaque())
        }
        d.instance_destroy = { instance in
            guard let instance else { return }
            Unmanaged<RoundRobinInstance>.fromOpaque(instance).release()
        }
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
        let storage = UnsafeMutablePointer<mg_plugin>.allocate(capacity: 1)
        storage.initialize(to: d)
        return UnsafePointer(storage)
    }()
}

/// The plugin's one exported symbol (MG_PLUGIN_ENTRY_V1).
@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    guard let host, host.pointee.abi_major == UInt32(MG_ABI_MAJOR) else { return nil }
    return RoundRobinPlugin.descriptor
}
