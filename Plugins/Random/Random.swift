import FilterABI

/// Uniform random choice among the usable endpoints (avoiding the one that
/// just failed when another exists). Takes no config.
enum RandomBalancer {
    static func pick(_ list: mg_endpoint_list, avoid: UInt64) -> Int? {
        let items = UnsafeBufferPointer(start: list.items, count: list.count)
        var candidates = items.indices.filter { items[$0].healthy != 0 && items[$0].ejected == 0 && items[$0].id != avoid }
        if candidates.isEmpty { candidates = items.indices.filter { items[$0].healthy != 0 && items[$0].ejected == 0 } }
        return candidates.randomElement()
    }

    /// Static storage for the life of the process, as the ABI requires.
    nonisolated(unsafe) static let descriptor: UnsafePointer<mg_plugin> = {
        var d = mg_plugin()
        d.size = UInt32(MemoryLayout<mg_plugin>.size)
        d.abi_major = UInt32(MG_ABI_MAJOR)
        d.abi_minor = 0
        d.kinds = UInt32(MG_KIND_BALANCER)
        d.name = UnsafeRawPointer(("random" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
        d.version = UnsafeRawPointer(("1.0.0" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
        d.config_new = { _, json, error, errorSize in
            let text = String(decoding: UnsafeRawBufferPointer(start: json.ptr, count: json.len), as: UTF8.self)
            guard ["{}", "", "null"].contains(text.filter { !$0.isWhitespace }) else {
                if let error, errorSize > 0 {
                    let bytes = Array("random takes no config (got \(text))".utf8CString.prefix(errorSize - 1)) + [0]
                    error.update(from: bytes, count: bytes.count)
                }
                return nil
            }
            return UnsafeMutableRawPointer(bitPattern: 1)  // accepted, no state
        }
        d.lb_pick = { _, _, request, list, chosen in
            guard let list, let chosen, let index = pick(list.pointee, avoid: request?.pointee.avoid_endpoint ?? 0) else { return -1 }
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
    return RandomBalancer.descriptor
}
