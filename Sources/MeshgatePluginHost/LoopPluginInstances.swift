import FilterABI

/// One event loop's plugin instances, one per (filter config, cluster):
/// created on first use on this loop, so loop-local plugin state never needs
/// a lock. Also remembers which endpoint-list version each balancer
/// instance has seen, to call lb_update before a pick that sees a new one.
public final class LoopPluginInstances {
    private let plugins: FilterChains
    private let loopIndex: UInt32
    private let clusterCount: Int
    private let clusterNames: [String]
    private var instances: [UnsafeMutableRawPointer?]
    private var created: [Bool]
    private var seenVersions: [UInt64]

    public init(plugins: FilterChains, loopIndex: Int, clusterNames: [String]) {
        self.plugins = plugins
        self.loopIndex = UInt32(loopIndex)
        self.clusterNames = clusterNames
        self.clusterCount = max(clusterNames.count, 1)
        let n = plugins.handles.count * self.clusterCount
        instances = Array(repeating: nil, count: n)
        created = Array(repeating: false, count: n)
        seenVersions = Array(repeating: .max, count: n)
    }

    private func slot(_ index: Int, _ cluster: Int) -> Int { index * clusterCount + cluster }

    public func instance(_ handle: FilterHandle, cluster: Int) -> UnsafeMutableRawPointer? {
        instance(handle.link, cluster: cluster)
    }

    public func instance(_ link: FilterLink, cluster: Int) -> UnsafeMutableRawPointer? {
        let i = slot(link.index, cluster)
        if _slowPath(!created[i]) { return create(link, cluster: cluster, slot: i) }
        return instances[i]
    }

    private func create(_ link: FilterLink, cluster: Int, slot i: Int) -> UnsafeMutableRawPointer? {
        created[i] = true
        guard let hook = link.hooks.instance_new else { return nil }
        var name = cluster < clusterNames.count ? clusterNames[cluster] : ""
        instances[i] = name.withUTF8 { bytes in
            hook(link.config, loopIndex, mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count))
        }
        return instances[i]
    }

    /// Calls lb_update when `list` is newer than what this instance saw.
    public func noteEndpoints(_ link: FilterLink, cluster: Int, list: UnsafePointer<mg_endpoint_list>) {
        let i = slot(link.index, cluster)
        guard seenVersions[i] != list.pointee.version else { return }
        seenVersions[i] = list.pointee.version
        link.hooks.lb_update?(instance(link, cluster: cluster), list)
    }

    /// Runs instance_destroy for every instance made on this loop.
    public func destroyAll() {
        for handle in plugins.handles {
            for cluster in 0..<clusterCount {
                let i = slot(handle.index, cluster)
                if created[i] { handle.hooks.instance_destroy?(instances[i]) }
                created[i] = false
                instances[i] = nil
            }
        }
    }
}
