import FilterABI
import Foundation

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
    static func fail(_ message: String, _ error: UnsafeMutablePointer<CChar>?, _ size: Int) {
        guard let error, size > 0 else { return }
        let bytes = Array(message.utf8CString.prefix(size - 1)) + [0]
        error.update(from: bytes, count: bytes.count)
    }

    /// Static storage for the life of the process, as the ABI requires.
    nonisolated(unsafe) static let descriptor: UnsafePointer<mg_plugin> = {
        var d = mg_plugin()
        d.size = UInt32(MemoryLayout<mg_plugin>.size)
        d.abi_major = UInt32(MG_ABI_MAJOR)
        d.abi_minor = 0
        d.kinds = UInt32(MG_KIND_BALANCER)
        d.name = UnsafeRawPointer(("least_conn" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
        d.version = UnsafeRawPointer(("1.0.0" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
        d.config_new = { _, json, error, errorSize in
            let data = Data(bytes: json.ptr, count: json.len)
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                fail("config must be a mapping", error, errorSize)
                return nil
            }
            if let unknown = object.keys.first(where: { $0 != "choices" }) {
                fail("unknown key '\(unknown)' (known: choices)", error, errorSize)
                return nil
            }
            let choices = (object["choices"] as? Int) ?? 0
            guard choices == 0 || (2...8).contains(choices) else {
                fail("choices must be 0 (compare all) or 2 to 8, got \(object["choices"] ?? "?")", error, errorSize)
                return nil
            }
            return UnsafeMutableRawPointer(Unmanaged.passRetained(LeastConnConfig(choices: choices)).toOpaque())
        }
        d.config_destroy = { config in
            guard let config else { return }
            Unmanaged<LeastConnConfig>.fromOpaque(config).release()
        }
        d.instance_new = { config, _, _ in
            let choices = config.map { Unmanaged<LeastConnConfig>.fromOpaque($0).takeUnretainedValue().choices } ?? 0
            return UnsafeMutableRawPointer(Unmanaged.passRetained(LeastConnInstance(choices: choices)).toOpaque())
        }
        d.instance_destroy = { instance in
            guard let instance else { return }
            Unmanaged<LeastConnInstance>.fromOpaque(instance).release()
        }
        d.lb_pick = { instance, _, request, list, chosen in
            guard let instance, let list, let chosen else { return -1 }
            let lb = Unmanaged<LeastConnInstance>.fromOpaque(instance).takeUnretainedValue()
            guard let index = lb.pick(list.pointee, avoid: request?.pointee.avoid_endpoint ?? 0) else { return -1 }
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
    return LeastConnPlugin.descriptor
}
