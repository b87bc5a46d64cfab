import Foundation
import Testing
@testable import GatewayHost
import MeshgatePosix
import MeshgateYAML
import NIOCore
@testable import MeshgateConfig
@testable import MeshgateDiscovery

/// Depth and size limits of the documents the gateway reads (config,
/// discovery files, etcd values), and the checks on discovery answers.
@Suite struct YAMLLimitsTests {
    func nested(_ depth: Int, open: String = "[", close: String = "]") -> String {
        String(repeating: open, count: depth) + String(repeating: close, count: depth)
    }

    @Test func nestingUpToTheLimitIsRead() throws {
        var node = try YAMLParser.parse(nested(YAMLLimits.defaultMaxDepth))
        var depth = 0
        while case .sequence(let items, _) = node {
            depth += 1
            guard let first = items.first else { break }
            node = first
        }
        #expect(depth == YAMLLimits.defaultMaxDepth)
    }

    @Test func oneLevelPastTheLimitIsRefusedAtItsColumn() {
        do {
            _ = try YAMLParser.parse("key: " + nested(YAMLLimits.defaultMaxDepth))
            Issue.record("accepted")
        } catch {
            // The root mapping is level 1: the 64th "[" (column 6 + 63) is level 65.
            #expect(error.isLimit && error.mark == YAMLMark(line: 1, column: 6 + 63), "\(error)")
            #expect(error.message.contains("nested deeper than 64 levels"), "\(error)")
        }
    }

    /// The issue's input: 100,000 nested flow sequences overflowed the
    /// stack (SIGSEGV) building the tree.
    @Test func aHundredThousandLevelsAreRefusedNotOverflowed() {
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            do {
                _ = try YAMLParser.parse("v: " + nested(100_000, open: open, close: close))
                Issue.record("accepted")
            } catch {
                #expect(error.isLimit && error.mark.line == 1, "\(error)")
            }
        }
        // An etcd value within its size (8 KiB) is refused by its depth;
        // the issue's 10,000 levels already by their size.
        let deepJSON = "{\"address\": \"127.0.0.1:1\", \"metadata\": " + nested(1_000) + "}"
        guard case .failure(let failure) = EtcdDiscovery.parse(deepJSON) else { Issue.record("accepted"); return }
        #expect(failure.description.contains("nested deeper than 64 levels"), "\(failure)")
        let deeper = "{\"address\": \"127.0.0.1:1\", \"metadata\": " + nested(10_000) + "}"
        guard case .failure(let large) = EtcdDiscovery.parse(deeper) else { Issue.record("accepted"); return }
        #expect(large.description.contains("over the limit of 8192 bytes"), "\(large)")
    }

    @Test func aDocumentOverItsSizeIsRefusedBeforeParsing() {
        do {
            _ = try YAMLParser.parse("a: 1234567890", limits: YAMLLimits(maxBytes: 10))
            Issue.record("accepted")
        } catch {
            #expect(error.isLimit && error.message == "the document is 13 bytes, over the limit of 10 bytes", "\(error)")
        }
        #expect((try? YAMLParser.parse("a: 1", limits: YAMLLimits(maxBytes: 4))) != nil)
        let value = #"{"address": "127.0.0.1:1", "metadata": {"x": ""# + String(repeating: "y", count: 70_000) + #""}}"#
        guard case .failure(let failure) = EtcdDiscovery.parse(value) else { Issue.record("accepted"); return }
        #expect(failure.description.contains("over the limit of 8192 bytes"), "\(failure)")
        // The bytes an etcd key-value carries are measured before they are decoded.
        guard case .failure(let bytes) = EtcdDiscovery.parse(Array(value.utf8)) else { Issue.record("accepted"); return }
        #expect(bytes.description == "the value is \(value.utf8.count) bytes, over the limit of 8192 bytes", "\(bytes)")
    }

    @Test func aConfigPastTheDepthNamesFileLineAndLimit() {
        let yaml = """
            listeners:
              - name: l
                address: 127.0.0.1:1
                routes: [{ match: { service: s }, cluster: c }]
            clusters:
              - name: c
                endpoints:
                  - { address: 127.0.0.1:2, metadata: { deep: \(nested(100_000)) } }
            """
        do {
            _ = try ConfigLoader.parse(yaml, file: "deep.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.description.hasPrefix("deep.yaml:8:"), "\(error)")
            #expect(error.message.contains("nested deeper than 64 levels") && !error.message.contains("syntax"), "\(error)")
        }
    }

    @Test func filesOverTheirLimitAreRefusedBeforeBeingRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mg-limits-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("big.yaml").path
        try Data(repeating: UInt8(ascii: "#"), count: 100).write(to: URL(fileURLWithPath: path))
        #expect(try Posix.readFile(path, maxBytes: 100).count == 100)
        #expect(throws: PosixError("read \(path)", code: EFBIG, detail: "the file is 100 bytes, over the limit of 99 bytes")) {
            try Posix.readFile(path, maxBytes: 99)
        }
        let file = Data(repeating: UInt8(ascii: "#"), count: InputLimits.discoveryFile.maxBytes + 1)
        try file.write(to: URL(fileURLWithPath: path))
        guard case .failure(let failure) = FileDiscovery.read(path) else { Issue.record("accepted"); return }
        #expect(failure.description.contains("over the limit of 4194304 bytes"), "\(failure)")
        try ("endpoints:\n  - address: 127.0.0.1:1\n    metadata: { a: " + nested(1000) + " }\n").write(toFile: path, atomically: true, encoding: .utf8)
        guard case .failure(let deep) = FileDiscovery.read(path) else { Issue.record("accepted"); return }
        #expect(deep.description.hasPrefix("\(path):3:") && deep.description.contains("nested deeper than 64"), "\(deep)")
    }
}

/// Labels of one endpoint: at most 32 names and 4 KiB of names and
/// values, from the config, a discovery file and an etcd value alike.
@Suite struct EndpointMetadataLimitsTests {
    func metadata(_ count: Int, valueBytes: Int = 1) -> String {
        "{" + (0..<count).map { "k\($0): " + String(repeating: "v", count: valueBytes) }.joined(separator: ", ") + "}"
    }

    func config(_ metadata: String) -> String {
        """
        listeners:
          - { name: l, address: 127.0.0.1:1, routes: [{ match: { service: s }, cluster: c }] }
        clusters:
          - name: c
            endpoints:
              - address: 127.0.0.1:2
                metadata: \(metadata)
        """
    }

    @Test func theConfigRefusesAnEndpointOverEitherLimitAtItsLine() throws {
        let full = try ConfigLoader.parse(config(metadata(32, valueBytes: 100)), file: "m.yaml")
        #expect(full.clusters[0].endpoints[0].metadata.count == 32)
        let cases = [
            (metadata(33), "33 names, over the limit of 32 per endpoint"),
            // 2 names of 2 bytes (k0, k1) and 2 values of 2,047 bytes: 4,098 bytes.
            (metadata(2, valueBytes: 2047), "names and values of 4098 bytes, over the limit of 4096 bytes per endpoint"),
        ]
        for (text, message) in cases {
            do {
                _ = try ConfigLoader.parse(config(text), file: "m.yaml")
                Issue.record("accepted \(message)")
            } catch {
                #expect(error.description.hasPrefix("m.yaml:7:") && error.field == "clusters[0].endpoints[0].metadata", "\(error)")
                #expect(error.message == message, "\(error)")
            }
        }
        #expect((try? ConfigLoader.parse(config(metadata(2, valueBytes: 2046)), file: "m.yaml")) != nil)
    }

    @Test func discoveryFilesAndEtcdValuesAreHeldToTheSameLimits() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mg-meta-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("eps.yaml").path
        try "endpoints:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:2\n    metadata: \(metadata(40))\n".write(toFile: path, atomically: true, encoding: .utf8)
        guard case .failure(let file) = FileDiscovery.read(path) else { Issue.record("accepted"); return }
        #expect(file.description.hasPrefix("\(path):4:") && file.description.contains("endpoints[1].metadata: 40 names, over the limit of 32"), "\(file)")
        let names = (0..<33).map { "\"k\($0)\": \"v\"" }.joined(separator: ", ")
        guard case .failure(let etcd) = EtcdDiscovery.parse("{\"address\": \"127.0.0.1:1\", \"metadata\": {\(names)}}") else { Issue.record("accepted"); return }
        #expect(etcd.description == "value.metadata: 33 names, over the limit of 32 per endpoint", "\(etcd)")
        // The most metadata an endpoint may have fits the etcd value limit as JSON.
        let most = (0..<32).map { "\"k\($0 + 10)\": \"\(String(repeating: "v", count: 124))\"" }.joined(separator: ", ")
        let value = "{\"address\": \"replica-with-a-long-name.namespace.svc.cluster.local:50051\", \"weight\": 100, \"metadata\": {\(most)}}"
        #expect((try? EtcdDiscovery.parse(value).get())?.metadata.count == 32)
        #expect(value.utf8.count < InputLimits.etcdValue.maxBytes)
    }
}

@Suite struct DiscoveredEndpointChecksTests {
    func spec(_ text: String) -> SocketAddressSpec { try! SocketAddressSpec.parse(text) }

    func own(_ yaml: String) throws -> GatewayOwnAddresses {
        GatewayOwnAddresses(try ConfigLoader.parse(yaml, file: "own.yaml"))
    }

    let local = LocalAddresses(interfaceIPs: [[10, 1, 2, 3], [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]], hostName: "gw-host")

    let config = """
        admin: { address: 127.0.0.1:9901, read_only_addresses: ["[::]:8080"] }
        listeners:
          - { name: public, address: 0.0.0.0:50051, routes: [{ match: { service: s }, cluster: c }] }
          - { name: local, address: "localhost:50052", routes: [{ match: { service: s }, cluster: c }] }
          - { name: pinned, address: "10.1.2.3:50053", routes: [{ match: { service: s }, cluster: c }] }
        clusters:
          - name: c
            discovery: { file: { path: x.yaml }, max_endpoints: 3 }
        """

    @Test func theGatewaysOwnAddressesAreRecognised() throws {
        let own = try own(config)
        let isOwn = { (text: String) in own.match(self.spec(text), local: self.local)?.what }
        // 0.0.0.0:50051 takes every local IPv4 address, not other hosts, not IPv6.
        #expect(isOwn("127.0.0.1:50051") == "listener 'public' 0.0.0.0:50051")
        #expect(isOwn("127.9.9.9:50051") != nil)
        #expect(isOwn("10.1.2.3:50051") != nil)
        #expect(isOwn("[::ffff:127.0.0.1]:50051") != nil)
        #expect(isOwn("localhost:50051") != nil && isOwn("GW-HOST:50051") != nil && isOwn("0.0.0.0:50051") != nil)
        #expect(isOwn("10.1.2.4:50051") == nil)
        #expect(isOwn("[::1]:50051") == nil)
        #expect(isOwn("127.0.0.1:50061") == nil)
        // localhost binds loopback; a pinned address only itself.
        #expect(isOwn("127.0.0.1:50052") != nil && isOwn("[::1]:50052") != nil && isOwn("10.1.2.3:50052") == nil)
        #expect(isOwn("10.1.2.3:50053") != nil && isOwn("127.0.0.1:50053") == nil && isOwn("[::]:50053") != nil)
        // Admin: the full address and a read-only `::` one (both families).
        #expect(isOwn("127.0.0.1:9901") == "admin 127.0.0.1:9901")
        #expect(isOwn("[fd00::7]:8080") == "admin (read-only) [::]:8080" && isOwn("127.0.0.1:8080") != nil)
        #expect(isOwn("[fd00::8]:8080") == nil)
        // Names other than this machine's are not resolved for the check.
        #expect(isOwn("replica.example:50051") == nil)
    }

    /// A dial reads `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1` and `0`
    /// as numbers (getaddrinfo's inet_aton forms) and `localhost.` as
    /// localhost: so does the check.
    @Test func everyFormADialTakesIsRecognised() throws {
        let own = try own(config)
        let isOwn = { (text: String) in own.match(self.spec(text), local: self.local)?.what }
        for host in ["127.1", "2130706433", "0x7f.1", "0x7F.0.0.1", "0177.0.0.1", "0", "0x7f000001", "127.0.0.1.", "localhost.", "LocalHost.",
                     "gw-host.", "a.localhost.", "012.1.2.3", "10.66051"] {
            #expect(isOwn("\(host):50051") == "listener 'public' 0.0.0.0:50051", "\(host)")
        }
        #expect(isOwn("0x7f.1:50052") == "listener 'local' localhost:50052")
        #expect(isOwn("012.1.2.3:50053") == "listener 'pinned' 10.1.2.3:50053")
        #expect(isOwn("2130706433:9901") == "admin 127.0.0.1:9901")
        // Not this machine, not a number, not an own port.
        for text in ["012.1.2.4:50051", "10.1.2.4.:50051", "cafe:50051", "127.1:50061", "localhost..:50051", "127.0.0.1 x:50051"] {
            #expect(isOwn(text) == nil, "\(text)")
        }
    }

    @Test func hostsAreReadAsGetaddrinfoReadsNumbers() {
        #expect(Posix.numericHostAddress("127.1") == [127, 0, 0, 1])
        #expect(Posix.numericHostAddress("2130706433") == [127, 0, 0, 1])
        #expect(Posix.numericHostAddress("0x7f.1") == [127, 0, 0, 1])
        #expect(Posix.numericHostAddress("0177.0.0.1") == [127, 0, 0, 1])
        #expect(Posix.numericHostAddress("0") == [0, 0, 0, 0])
        #expect(Posix.numericHostAddress("::1") == LocalAddresses.loopbackV6)
        #expect(Posix.numericHostAddress("fe80::1%lo")?.count == 16)
        #expect(Posix.numericHostAddress("::ffff:127.0.0.1")?.count == 16)
        #expect(GatewayOwnAddresses.normalizedIP("::ffff:127.0.0.1") == [127, 0, 0, 1])
        for name in ["localhost", "1.2.3.4.", "127.0.0.1 x", "[::1]", "", "256.1.1.1.1", "cafe"] {
            #expect(Posix.numericHostAddress(name) == nil, "\(name)")
            #expect(GatewayOwnAddresses.normalizedIP(name) == nil, "\(name)")
        }
    }

    /// After an upstream connect: the peer's address against the listeners
    /// and admin addresses; this machine's addresses are read only for a
    /// peer on an own port that is not a bound IP itself.
    @Test func aConnectedPeerIsCheckedByItsAddress() throws {
        let own = try own(config)
        var reads = 0
        let local = { () -> LocalAddresses in
            reads += 1
            return self.local
        }
        let peer = { (ip: String, port: Int) in own.match(peer: try! SocketAddress(ipAddress: ip, port: port), local: local)?.what }
        #expect(peer("10.1.2.3", 50053) == "listener 'pinned' 10.1.2.3:50053" && reads == 0)
        #expect(peer("127.0.0.1", 9901) == "admin 127.0.0.1:9901" && reads == 0)
        #expect(peer("10.9.9.9", 50061) == nil && reads == 0)
        #expect(peer("127.0.0.1", 50051) == "listener 'public' 0.0.0.0:50051")
        #expect(peer("10.1.2.3", 50051) != nil)
        #expect(peer("::ffff:10.1.2.3", 50051) != nil)
        #expect(peer("fd00::7", 8080) == "admin (read-only) [::]:8080")
        #expect(peer("10.1.2.4", 50051) == nil && peer("::1", 50051) == nil)
        #expect(reads >= 1)
    }

    /// A 4 MiB file of self-addresses is ~250,000 of them: the first 16 are
    /// kept to show, the rest counted.
    @Test func refusedOwnAddressesAreCountedAndTheFirstSixteenKept() throws {
        let parsed = try ConfigLoader.parse(config, file: "own.yaml")
        let checks = DiscoveryManager.AnswerChecks(maxEndpoints: 10, own: GatewayOwnAddresses(parsed))
        let endpoints = (0..<5000).map { EndpointConfig(address: spec("127.0.\($0 / 250).\($0 % 250 + 1):50051")) }
            + [EndpointConfig(address: spec("10.9.9.9:50051"))]
        let checked = DiscoveryManager.check(endpoints, checks, local: local)
        #expect(checked.kept.map(\.address.host) == ["10.9.9.9"])
        #expect(checked.refusedCount == 5000)
        #expect(checked.refused.count == DiscoveryManager.maxRefusedShown && DiscoveryManager.maxRefusedShown == 16)
        #expect(checked.refused.first == "127.0.0.1:50051 (listener 'public' 0.0.0.0:50051)")
    }

    @Test func answersLoseOwnAddressesThenKeepAtMostMaxEndpoints() throws {
        let parsed = try ConfigLoader.parse(config, file: "own.yaml")
        #expect(parsed.clusters[0].maxDiscoveredEndpoints == 3)
        let checks = DiscoveryManager.AnswerChecks(maxEndpoints: parsed.clusters[0].maxDiscoveredEndpoints, own: GatewayOwnAddresses(parsed))
        let endpoints = ["127.0.0.1:50061", "127.0.0.1:50051", "127.0.0.1:50062", "127.0.0.1:50063", "127.0.0.1:50064", "127.0.0.1:50065"]
            .map { EndpointConfig(address: spec($0)) }
        let checked = DiscoveryManager.check(endpoints, checks, local: local)
        #expect(checked.kept.map(\.address.port) == [50061, 50062, 50063])
        #expect(checked.refused == ["127.0.0.1:50051 (listener 'public' 0.0.0.0:50051)"])
        #expect(checked.dropped == 2)
        let few = DiscoveryManager.check(Array(endpoints.prefix(1)), checks, local: local)
        #expect(few.kept.count == 1 && few.dropped == 0 && few.refused.isEmpty)
    }

    @Test func maxEndpointsDefaultsAndRange() throws {
        let base = config.replacingOccurrences(of: ", max_endpoints: 3", with: "")
        #expect(try ConfigLoader.parse(base, file: "a.yaml").clusters[0].maxDiscoveredEndpoints == 10_000)
        do {
            _ = try ConfigLoader.parse(config.replacingOccurrences(of: "max_endpoints: 3", with: "max_endpoints: 0"), file: "a.yaml")
            Issue.record("accepted 0")
        } catch {
            #expect(error.field == "clusters[0].discovery.max_endpoints", "\(error)")
        }
    }
}
