import FilterABI
import MeshgatePosix
import MeshgateConfig

/// One cluster's endpoints as seen from one event loop, and the view of
/// them that balancer plugins pick from (`mg_endpoint_list`).
public final class ClusterPool {
    public let config: ClusterConfig
    public let index: Int
    public private(set) var endpoints: [EndpointPool] = []
    /// The balancers' view: one mg_endpoint per endpoint, in config order.
    private let items: UnsafeMutablePointer<mg_endpoint>
    private let nameBytes: UnsafeMutableBufferPointer<CChar>
    private var addressBytes: [UnsafeMutableBufferPointer<CChar>] = []
    private var version: UInt64 = 1
    /// ABI 1.2: each endpoint's labels, parallel to `items`, sorted by key,
    /// their bytes in `metadataBytes`. Built once per generation and loop;
    /// never written after init.
    private let metadata: UnsafeMutablePointer<mg_endpoint_metadata>
    private var metadataEntries: [UnsafeMutableBufferPointer<mg_metadata_entry>] = []
    private var metadataBytes: [UnsafeMutableBufferPointer<CChar>] = []

    /// `pool` gives the pool of each endpoint: a new one, or the one a
    /// previous generation used.
    public init(config: ClusterConfig, index: Int, pool: (EndpointConfig) -> EndpointPool) {
        self.config = config
        self.index = index
        self.endpoints = config.endpoints.map(pool)
        items = .allocate(capacity: max(endpoints.count, 1))
        metadata = .allocate(capacity: max(endpoints.count, 1))
        nameBytes = Self.copy(config.name)
        for (i, endpointConfig) in config.endpoints.enumerated() {
            let labels = endpointConfig.metadata.sorted { $0.key < $1.key }
            guard !labels.isEmpty else {
                metadata[i] = mg_endpoint_metadata(entries: nil, count: 0)
                continue
            }
            let entries = UnsafeMutableBufferPointer<mg_metadata_entry>.allocate(capacity: labels.count)
            for (j, label) in labels.enumerated() {
                let key = Self.copy(label.key)
                let value = Self.copy(label.value)
                metadataBytes += [key, value]
                entries[j] = mg_metadata_entry(key: mg_str(ptr: key.baseAddress, len: key.count),
                                               value: mg_str(ptr: value.baseAddress, len: value.count))
            }
            metadataEntries.append(entries)
            metadata[i] = mg_endpoint_metadata(entries: entries.baseAddress, count: labels.count)
        }
        for (i, endpoint) in endpoints.enumerated() {
            let address = Self.copy(endpoint.address)
            addressBytes.append(address)
            items[i] = mg_endpoint(
                address: mg_str(ptr: address.baseAddress, len: address.count), id: Self.endpointID(address: endpoint.address),
                weight: UInt32(config.endpoints[i].weight), in_flight: 0, healthy: 1, ejected: 0,
                reserved: (0, 0, 0, 0, 0, 0))
        }
    }

    deinit {
        items.deallocate()
        nameBytes.deallocate()
        addressBytes.forEach { $0.deallocate() }
        metadata.deallocate()
        metadataEntries.forEach { $0.deallocate() }
        metadataBytes.forEach { $0.deallocate() }
    }

    /// Label `key` of endpoint `index` (ABI 1.2 attempt_endpoint_metadata).
    public func metadataValue(endpoint index: Int, key: mg_str) -> mg_str? {
        guard index >= 0, index < endpoints.count, let wanted = key.ptr else { return nil }
        let labels = metadata[index]
        for j in 0..<labels.count {
            let entry = labels.entries[j]
            if entry.key.len == key.len, entry.key.len == 0 || Posix.bytesEqual(entry.key.ptr, wanted, count: key.len) { return entry.value }
        }
        return nil
    }

    private static func copy(_ text: String) -> UnsafeMutableBufferPointer<CChar> {
        let utf8 = Array(text.utf8)
        let buffer = UnsafeMutableBufferPointer<CChar>.allocate(capacity: max(utf8.count, 1))
        for (i, b) in utf8.enumerated() { buffer[i] = CChar(bitPattern: b) }
        return UnsafeMutableBufferPointer(rebasing: buffer[0..<utf8.count])
    }

    public var name: String { config.name }

    /// The current view for a pick: health (active checks, and whether this
    /// loop can connect right now) and in-flight counts refreshed; the
    /// version moves when usability changes.
    public func endpointList() -> mg_endpoint_list {
        for (i, endpoint) in endpoints.enumerated() {
            let usable: UInt8 = endpoint.healthy && !endpoint.isBackingOff ? 1 : 0
            let ejected: UInt8 = endpoint.ejected ? 1 : 0
            if items[i].healthy != usable || items[i].ejected != ejected {
                items[i].healthy = usable
                items[i].ejected = ejected
                version &+= 1
            }
            items[i].in_flight = UInt32(clamping: endpoint.inFlight)
        }
        return mg_endpoint_list(cluster: mg_str(ptr: nameBytes.baseAddress, len: nameBytes.count),
                                items: items, count: endpoints.count, version: version, metadata: metadata)
    }

    /// The id balancers see for endpoint `index`.
    public func endpointID(_ index: Int) -> UInt64 { items[index].id }

    /// Endpoint ids derive from the address (FNV-1a, never 0), so that they
    /// stay the same across reloads and on every loop.
    public static func endpointID(address: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in address.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash == 0 ? 1 : hash
    }

    /// Outlier detection changed an endpoint's ejection (pushed to every loop).
    public func setEjected(endpointID: UInt64, _ ejected: Bool) {
        for (i, endpoint) in endpoints.enumerated() where items[i].id == endpointID { endpoint.ejected = ejected }
    }

    public var hasHealthyEndpoint: Bool { endpoints.contains { $0.healthy && !$0.ejected } }

    /// Where the next shadow (mirrored) call to this cluster goes: round
    /// robin over the endpoints that are healthy, not ejected and not
    /// backing off, from this loop's cursor. No balancer plugin is asked,
    /// so mirroring cannot disturb a balancer's state.
    private var shadowCursor = 0

    public func nextShadowEndpoint() -> Int? {
        guard !endpoints.isEmpty else { return nil }
        for step in 0..<endpoints.count {
            let i = (shadowCursor + step) % endpoints.count
            let endpoint = endpoints[i]
            if endpoint.healthy && !endpoint.ejected && !endpoint.isBackingOff {
                shadowCursor = i + 1
                return i
            }
        }
        return nil
    }

    public func closeAll() {
        for endpoint in endpoints { endpoint.closeAll() }
    }
}
