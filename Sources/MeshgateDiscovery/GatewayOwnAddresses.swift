import MeshgatePosix
import NIOCore
import MeshgateConfig

/// The addresses the gateway itself listens on (listeners, admin, the
/// read-only admin addresses), to refuse a discovered endpoint that is one
/// of them: calls sent there would come back into the gateway, be routed
/// to the same cluster and loop until their deadline, each turn holding a
/// connection and a stream.
///
/// An endpoint is the gateway's own when its port is one the gateway
/// listens on and its host reaches that listening socket:
/// - the same IP (an IPv4-mapped IPv6 address counts as its IPv4 one);
/// - any address of this machine (loopback, an interface's address) when
///   the gateway listens on 0.0.0.0 (IPv4) or `::` (both families);
/// - 0.0.0.0 or `::` as the endpoint's host (connecting there reaches
///   this machine);
/// - `localhost` (and `*.localhost`) as loopback, and this machine's host
///   name as any of its addresses.
/// A host is read as a dial reads it: every numeric form getaddrinfo
/// takes (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `0`), and a name
/// with its trailing dot (`localhost.`) as the name.
/// Other host names are not resolved for this check (it would take a DNS
/// query per discovered name on the control thread); a name that resolves
/// to the gateway (an /etc/hosts alias, a wildcard DNS name such as
/// `127.0.0.1.nip.io`) is caught when an upstream connection is made to it:
/// `match(peer:)` on the connected peer's address (`EndpointPool`).
public struct GatewayOwnAddresses: Equatable, Sendable {
    public struct Own: Equatable, Sendable {
        /// What it is, for the log: "listener 'public' 0.0.0.0:50051".
        public var what: String
        public var port: Int
        /// The IPs the socket is bound to (all zeros: every address of
        /// its family; `::` takes both families).
        public var ips: [[UInt8]]
    }

    public private(set) var own: [Own] = []

    public init() {}

    /// From the config: listener and admin addresses, host names
    /// resolved as binding them does (a name that does not resolve is
    /// left out: the gateway could not listen there either).
    public init(_ config: GatewayConfig) {
        for listener in config.listeners {
            add("listener '\(listener.name)' \(listener.address)", listener.address)
        }
        if let admin = config.admin {
            add("admin \(admin.address)", admin.address)
            for address in admin.readOnlyAddresses { add("admin (read-only) \(address)", address) }
        }
    }

    private mutating func add(_ what: String, _ address: SocketAddressSpec) {
        var ips = Self.literalOrLocalName(address.host, local: nil) ?? []
        if ips.isEmpty, let resolved = try? SocketAddress.makeAddressResolvingHost(address.host, port: address.port),
           let bytes = Self.bytes(resolved) {
            ips = [bytes]
        }
        guard !ips.isEmpty else { return }
        own.append(Own(what: what, port: address.port, ips: ips))
    }

    /// The own address `endpoint` would reach, or nil.
    public func match(_ endpoint: SocketAddressSpec, local: LocalAddresses) -> Own? {
        guard own.contains(where: { $0.port == endpoint.port }),
              let targets = Self.literalOrLocalName(endpoint.host, local: local) else { return nil }
        for own in own where own.port == endpoint.port {
            for target in targets where Self.reaches(target, own, local) { return own }
        }
        return nil
    }

    /// The own address a connected upstream's peer is, or nil: what a
    /// host name (or anything `match(_:local:)` could not read) turned out
    /// to reach. Cheap for every other peer: its port is compared first,
    /// and this machine's addresses (`local`, a getifaddrs) are read only
    /// for a peer on an own port that is not the bound IP itself.
    public func match(peer: SocketAddress, local: () -> LocalAddresses) -> Own? {
        guard let port = peer.port, own.contains(where: { $0.port == port }), let target = Self.bytes(peer) else { return nil }
        // Exact binds first: they need no getifaddrs.
        for own in own where own.port == port && Self.reaches(target, own, nil) { return own }
        guard own.contains(where: { $0.port == port && $0.ips.contains(where: Self.isUnspecified) }) else { return nil }
        let here = local()
        for own in own where own.port == port && Self.reaches(target, own, here) { return own }
        return nil
    }

    /// Whether `target` reaches `own`; without `local`, only by the bound
    /// IPs themselves.
    private static func reaches(_ target: [UInt8], _ own: Own, _ local: LocalAddresses?) -> Bool {
        if isUnspecified(target) { return true }
        for ip in own.ips {
            if isUnspecified(ip) {
                // 0.0.0.0 takes IPv4 only; `::` both (Linux's default bindv6only=0).
                if (ip.count == 16 || target.count == 4) && local?.contains(target) == true { return true }
            } else if ip == target {
                return true
            }
        }
        return false
    }

    /// The IPs `host` stands for without a DNS query: a number as
    /// getaddrinfo reads one (`normalizedIP`), localhost, or (with
    /// `local`) this machine's name; nil otherwise. A trailing dot (the
    /// root of DNS: `localhost.`) names the same host.
    public static func literalOrLocalName(_ host: String, local: LocalAddresses?) -> [[UInt8]]? {
        let trimmed = host.hasSuffix(".") ? String(host.dropLast()) : host
        if let ip = normalizedIP(trimmed) { return [ip] }
        let name = trimmed.lowercased()
        if name == "localhost" || name.hasSuffix(".localhost") { return [LocalAddresses.loopbackV4, LocalAddresses.loopbackV6] }
        if let local, let machine = local.hostName, name == machine || name.hasPrefix(machine + ".") {
            return [LocalAddresses.loopbackV4, LocalAddresses.loopbackV6] + local.interfaceIPs
        }
        return nil
    }

    /// `host` read as getaddrinfo with AI_NUMERICHOST reads it (every
    /// inet_aton form of IPv4, IPv6 with a zone), an IPv4-mapped IPv6
    /// address as its IPv4 one; nil for a name. Only text made of what a
    /// number can hold goes to libc, so a list of names costs no call each.
    public static func normalizedIP(_ host: String) -> [UInt8]? {
        let number = host.utf8.prefix { $0 != UInt8(ascii: "%") }
        guard !number.isEmpty, number.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || $0 | 0x20 == UInt8(ascii: "x") }),
              let ip = Posix.numericHostAddress(host) else { return nil }
        return unmapped(ip)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
    }

    private static func unmapped(_ ip: [UInt8]) -> [UInt8] {
        if ip.count == 16, ip[0..<10].allSatisfy({ $0 == 0 }), ip[10] == 0xff, ip[11] == 0xff { return Array(ip[12...]) }
        return ip
    }

    public static func isUnspecified(_ ip: [UInt8]) -> Bool { ip.allSatisfy { $0 == 0 } }

    /// The IP of an IPv4 or IPv6 socket address: 4 or 16 bytes, an
    /// IPv4-mapped IPv6 address as its 4.
    public static func bytes(_ address: SocketAddress) -> [UInt8]? {
        // sockaddr_in: family, port, then the 4-byte address at offset 4;
        // sockaddr_in6: family, port, flow info, then 16 bytes at offset 8.
        let range: Range<Int>
        switch address.protocol {
        case .inet: range = 4..<8
        case .inet6: range = 8..<24
        default: return nil
        }
        let ip = address.withSockAddr { pointer, length -> [UInt8]? in
            guard length >= range.upperBound else { return nil }
            return Array(UnsafeRawBufferPointer(start: pointer, count: length)[range])
        }
        return ip.map(unmapped)
    }
}

/// This machine's addresses, read when a discovery answer is checked.
public struct LocalAddresses: Sendable {
    public static let loopbackV4: [UInt8] = [127, 0, 0, 1]
    public static let loopbackV6: [UInt8] = Array(repeating: 0, count: 15) + [1]

    public var interfaceIPs: [[UInt8]]
    public var hostName: String?

    public init(interfaceIPs: [[UInt8]], hostName: String?) {
        self.interfaceIPs = interfaceIPs
        self.hostName = hostName
    }

    /// The interfaces' addresses now (getifaddrs) and the host name.
    public static func current() -> LocalAddresses {
        let devices = (try? System.enumerateDevices()) ?? []
        return LocalAddresses(interfaceIPs: devices.compactMap { $0.address.flatMap(GatewayOwnAddresses.bytes) }, hostName: Posix.hostName)
    }

    /// Whether connecting to `ip` reaches this machine: 127.0.0.0/8, ::1,
    /// or an interface's address.
    public func contains(_ ip: [UInt8]) -> Bool {
        if ip.count == 4 && ip[0] == 127 { return true }
        if ip == Self.loopbackV6 { return true }
        return interfaceIPs.contains(ip)
    }
}
