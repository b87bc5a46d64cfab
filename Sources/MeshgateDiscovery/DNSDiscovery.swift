import NIOCore
import MeshgateConfig

/// Endpoints from DNS: the A/AAAA records of a name (each address with the
/// configured port), or the SRV records of `_service._proto.name` (each
/// target's addresses with the record's port and weight; only the lowest
/// priority present is used, as RFC 2782 says). This is what a Kubernetes
/// headless Service publishes.
///
/// Resolution repeats after the smallest TTL of the answer, kept within
/// `[min_refresh_interval, refresh_interval]`; failures retry with backoff.
public final class DNSDiscovery: DiscoverySource {
    public let config: DNSDiscoveryConfig
    private let resolver: DNSResolver
    private let eventLoop: EventLoop
    private var report: Report?
    private var timer: Scheduled<Void>?
    private var backoff: DiscoveryBackoff
    private var round = 0

    public init(config: DNSDiscoveryConfig, eventLoop: EventLoop) {
        self.config = config
        self.eventLoop = eventLoop
        self.resolver = DNSResolver(server: config.resolver ?? DNSResolver.systemServer(), eventLoop: eventLoop,
                                    timeout: .nanoseconds(config.timeout.nanosecondsClamped))
        self.backoff = DiscoveryBackoff(limit: config.refreshInterval)
    }

    public func start(report: @escaping Report) {
        self.report = report
        resolve()
    }

    public func stop() {
        report = nil
        timer?.cancel()
        round += 1
    }

    private func resolve() {
        round += 1
        let current = round
        let finish: (Result<(endpoints: [EndpointConfig], ttl: UInt32), DiscoveryFailure>) -> Void = { result in
            guard current == self.round, let report = self.report else { return }
            switch result {
            case .success(let answer):
                self.backoff.reset()
                report(.success(answer.endpoints))
                self.schedule(nanoseconds: self.refreshDelay(ttl: answer.ttl))
            case .failure(let failure):
                report(.failure(failure))
                self.schedule(nanoseconds: self.backoff.next() * 1_000_000)
            }
        }
        if config.srv { resolveSRV(finish) } else { resolveAddresses(config.name, port: config.port, weight: 1, finish) }
    }

    private func refreshDelay(ttl: UInt32) -> Int64 {
        let ttlNanos = Int64(ttl) * 1_000_000_000
        return min(max(ttlNanos, config.minRefreshInterval.nanosecondsClamped), config.refreshInterval.nanosecondsClamped)
    }

    private func schedule(nanoseconds: Int64) {
        timer = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) { self.resolve() }
    }

    private var types: [DNSRecordType] {
        switch config.family {
        case .any: return [.a, .aaaa]
        case .v4: return [.a]
        case .v6: return [.aaaa]
        }
    }

    /// A and/or AAAA of `name`: every address with `port`. NXDOMAIN or no
    /// record at all is a failure (the cluster keeps its last endpoints).
    private func resolveAddresses(_ name: String, port: Int, weight: Int,
                                  _ done: @escaping (Result<(endpoints: [EndpointConfig], ttl: UInt32), DiscoveryFailure>) -> Void) {
        var pending = types.count
        var addresses: [String] = []
        var ttl = UInt32.max
        var errors: [String] = []
        for type in types {
            resolver.query(name, type: type) { result in
                switch result {
                case .success(let response):
                    if response.rcode != 0 {
                        errors.append("\(type) \(name): \(Self.rcodeName(response.rcode))")
                    } else if response.truncated && response.answers.isEmpty {
                        errors.append("\(type) \(name): the answer was truncated even over TCP")
                    }
                    for record in response.answers where Self.owns(record.name, name, response.answers) {
                        switch record.data {
                        case .a(let ip), .aaaa(let ip):
                            addresses.append(ip)
                            ttl = min(ttl, record.ttl)
                        case .cname:
                            ttl = min(ttl, record.ttl)
                        default: break
                        }
                    }
                case .failure(let error):
                    errors.append(error.description)
                }
                pending -= 1
                guard pending == 0 else { return }
                if addresses.isEmpty {
                    done(.failure(DiscoveryFailure(errors.isEmpty ? "\(name) has no \(self.types.map { "\($0)" }.joined(separator: "/")) records" : errors.joined(separator: "; "))))
                } else {
                    let endpoints = addresses.map { EndpointConfig(address: SocketAddressSpec(host: $0, port: port), weight: weight) }
                    done(.success((endpoints, ttl)))
                }
            }
        }
    }

    /// SRV records, then each target's addresses (from the additional
    /// section when the server sent them, else asked for).
    private func resolveSRV(_ done: @escaping (Result<(endpoints: [EndpointConfig], ttl: UInt32), DiscoveryFailure>) -> Void) {
        resolver.query(config.name, type: .srv) { result in
            let response: DNSResponse
            switch result {
            case .failure(let error):
                done(.failure(DiscoveryFailure(error.description)))
                return
            case .success(let r):
                response = r
            }
            guard response.rcode == 0 else {
                done(.failure(DiscoveryFailure("SRV \(self.config.name): \(Self.rcodeName(response.rcode))")))
                return
            }
            var records: [(priority: UInt16, weight: UInt16, port: UInt16, target: String, ttl: UInt32)] = []
            for record in response.answers {
                if case .srv(let priority, let weight, let port, let target) = record.data, port != 0 {
                    records.append((priority, weight, port, target, record.ttl))
                }
            }
            guard let best = records.map(\.priority).min() else {
                done(.failure(DiscoveryFailure("SRV \(self.config.name): no records")))
                return
            }
            records = records.filter { $0.priority == best }
            var ttl = records.map(\.ttl).min() ?? UInt32.max
            var endpoints: [EndpointConfig] = []
            var errors: [String] = []
            var pending = records.count
            let finishOne = {
                pending -= 1
                guard pending == 0 else { return }
                if endpoints.isEmpty {
                    done(.failure(DiscoveryFailure("SRV \(self.config.name): no target resolved: " + errors.joined(separator: "; "))))
                } else {
                    // A target listed twice (two ports) stays two endpoints; one address once.
                    var seen: Set<SocketAddressSpec> = []
                    done(.success((endpoints.filter { seen.insert($0.address).inserted }, ttl)))
                }
            }
            for record in records {
                let weight = max(Int(record.weight), 1)
                let glue = response.additionals.compactMap { extra -> String? in
                    guard extra.name.lowercased() == record.target.lowercased() else { return nil }
                    switch extra.data {
                    case .a(let ip) where self.config.family != .v6: return ip
                    case .aaaa(let ip) where self.config.family != .v4: return ip
                    default: return nil
                    }
                }
                if !glue.isEmpty {
                    endpoints += glue.map { EndpointConfig(address: SocketAddressSpec(host: $0, port: Int(record.port)), weight: weight) }
                    finishOne()
                    continue
                }
                self.resolveAddresses(record.target, port: Int(record.port), weight: weight) { result in
                    switch result {
                    case .success(let answer):
                        endpoints += answer.endpoints
                        ttl = min(ttl, answer.ttl)
                    case .failure(let failure):
                        errors.append(failure.description)
                    }
                    finishOne()
                }
            }
        }
    }

    /// Whether `owner` is `name` or an alias `name` reaches through CNAMEs
    /// in the same answer.
    private static func owns(_ owner: String, _ name: String, _ answers: [DNSRecord]) -> Bool {
        var names: Set<String> = [name.lowercased()]
        var grew = true
        while grew {
            grew = false
            for record in answers {
                if case .cname(let target) = record.data, names.contains(record.name.lowercased()), names.insert(target.lowercased()).inserted {
                    grew = true
                }
            }
        }
        return names.contains(owner.lowercased())
    }

    private static func rcodeName(_ rcode: UInt8) -> String {
        switch rcode {
        case 1: return "FORMERR"
        case 2: return "SERVFAIL"
        case 3: return "NXDOMAIN (no such name)"
        case 4: return "NOTIMP"
        case 5: return "REFUSED"
        default: return "rcode \(rcode)"
        }
    }
}
