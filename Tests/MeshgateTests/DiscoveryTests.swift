import Foundation
import Testing
@testable import GatewayHost
@testable import MeshgateEtcd
import ProtoWire

@Suite struct EtcdWireTests {
    @Test func prefixRangeEndIncrementsTheLastByte() {
        #expect(EtcdMessages.prefixEnd(Array("/svc/".utf8)) == Array("/svc0".utf8))
        #expect(EtcdMessages.prefixEnd([0x61, 0xff]) == [0x62])
        #expect(EtcdMessages.prefixEnd([0xff]) == [0])
    }

    @Test func rangeResponseKeepsKeysValuesAndRevision() throws {
        var header = ProtoWriter()
        header.int64(3, 42)
        var kv = ProtoWriter()
        kv.bytes(1, Array("/svc/a".utf8))
        kv.int64(3, 41)
        kv.bytes(5, Array("127.0.0.1:1".utf8))
        kv.int64(6, 7)
        var response = ProtoWriter()
        response.message(1, header)
        response.message(2, kv)
        response.varint(99, 5)  // unknown fields are skipped
        let (kvs, revision) = try EtcdMessages.rangeResponse(response.bytes)
        #expect(revision == 42)
        #expect(kvs.count == 1)
        #expect(kvs[0].keyString == "/svc/a" && kvs[0].valueString == "127.0.0.1:1" && kvs[0].lease == 7 && kvs[0].modRevision == 41)
    }

    @Test func watchResponseEvents() throws {
        var put = ProtoWriter()
        put.message(2, { var kv = ProtoWriter(); kv.bytes(1, Array("/k1".utf8)); kv.bytes(5, Array("v".utf8)); return kv }())
        var delete = ProtoWriter()
        delete.varint(1, 1)
        delete.message(2, { var kv = ProtoWriter(); kv.bytes(1, Array("/k2".utf8)); return kv }())
        var response = ProtoWriter()
        response.message(11, put)
        response.message(11, delete)
        let decoded = try EtcdMessages.watchResponse(response.bytes)
        #expect(decoded.events.map(\.kind) == [.put, .delete])
        #expect(decoded.events.map(\.kv.keyString) == ["/k1", "/k2"])
        #expect(!decoded.canceled)
    }

    @Test func truncatedMessagesThrow() {
        var kv = ProtoWriter()
        kv.bytes(1, Array("/a-long-key".utf8))
        let cut = Array(kv.bytes.dropLast(3))
        #expect(throws: ProtoDecodeError.self) { try EtcdMessages.rangeResponse([0x12, 0x20] + cut) }
        #expect(throws: ProtoDecodeError.self) { try EtcdMessages.watchResponse([0x08, 0xff]) }
    }

    /// The etcd decoders fed random bytes and mutated valid messages
    /// (seeded): each input decodes or throws ProtoDecodeError, never traps;
    /// random bytes are mostly refused, and mutations of a valid response
    /// that decode keep revisions and key/value sizes within the input.
    @Test func randomAndMutatedBytesDecodeOrThrow() {
        var rng = SplitMix64(seed: 0xE7CD)
        var kv = ProtoWriter()
        kv.bytes(1, Array("/mesh/replicas/r1".utf8))
        kv.bytes(5, Array("127.0.0.1:50051".utf8))
        var header = ProtoWriter()
        header.varint(3, 42)
        var response = ProtoWriter()
        response.message(1, header)
        response.message(2, kv)
        let valid = response.bytes
        var refusedRandom = 0
        for i in 0..<3000 {
            var input: [UInt8]
            if i % 2 == 0 {
                input = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                input = valid
                for _ in 0..<(1 + Int(rng.next() % 3)) {
                    input[Int(rng.next() % UInt64(input.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                if rng.next() % 4 == 0 { input.removeLast(Int(rng.next() % UInt64(input.count))) }
            }
            do {
                let decoded = try EtcdMessages.rangeResponse(input)
                for kv in decoded.kvs { #expect(kv.key.count + kv.value.count <= input.count, "case \(i)") }
            } catch {
                if i % 2 == 0 { refusedRandom += 1 }
            }
            do { _ = try EtcdMessages.watchResponse(input) } catch {}
            do { _ = try EtcdMessages.leaseResponse(input) } catch {}
        }
        #expect(refusedRandom > 500, "random bytes should mostly be refused (\(refusedRandom) of 1500)")
    }

    @Test func registrationValueIsJSONTheDiscoveryReads() {
        let entry = EtcdRegistration.Entry(key: "/p/r1", address: "127.0.0.1:5", weight: 3, metadata: ["zone": "a\"b"])
        #expect(entry.json == #"{"address":"127.0.0.1:5","weight":3,"metadata":{"zone":"a\"b"}}"#)
        let endpoint = try? EtcdDiscovery.parse(entry.json).get()
        #expect(endpoint == EndpointConfig(address: SocketAddressSpec(host: "127.0.0.1", port: 5), weight: 3, metadata: ["zone": "a\"b"]))
    }

    @Test func etcdValuesMayBeBareAddressesAndBadOnesAreRefused() {
        #expect((try? EtcdDiscovery.parse(" 10.0.0.7:50051\n").get())?.address == SocketAddressSpec(host: "10.0.0.7", port: 50051))
        #expect((try? EtcdDiscovery.parse("no-port").get()) == nil)
        #expect((try? EtcdDiscovery.parse(#"{"weight": 2}"#).get()) == nil)
        #expect((try? EtcdDiscovery.parse(#"{"address": "1.2.3.4:5", "weight": 0}"#).get()) == nil)
    }

    @Test func endpointParsing() {
        #expect(EtcdClient.Endpoint(parsing: "http://127.0.0.1:2379/")?.description == "127.0.0.1:2379")
        #expect(EtcdClient.Endpoint(parsing: "[::1]:2379")?.host == "::1")
        #expect(EtcdClient.Endpoint(parsing: "localhost") == nil)
    }
}

@Suite struct DiscoveryConfigTests {
    func config(_ cluster: String) throws(ConfigError) -> GatewayConfig {
        try ConfigLoader.parse("""
            listeners:
              - name: l
                address: 127.0.0.1:1
                routes: [{ match: { service: s }, cluster: c }]
            clusters:
              - name: c
            \(cluster)
            """, file: "/etc/meshgate/mesh.yaml")
    }

    @Test func dnsFileAndEtcdSources() throws {
        let dns = try config("""
                discovery: { dns: { name: mesh.test., port: 50051, resolver: 127.0.0.1:5353, refresh_interval: 10s, family: v4 } }
            """)
        #expect(dns.clusters[0].discovery == .dns(DNSDiscoveryConfig(
            name: "mesh.test", port: 50051, resolver: SocketAddressSpec(host: "127.0.0.1", port: 5353),
            refreshInterval: .seconds(10), family: .v4)))
        #expect(dns.clusters[0].endpoints.isEmpty)
        let srv = try config("    discovery: { dns: { srv: _grpc._tcp.mesh.test } }")
        guard case .dns(let s) = srv.clusters[0].discovery else { Issue.record("not dns"); return }
        #expect(s.srv && s.name == "_grpc._tcp.mesh.test")
        let file = try config("    discovery: { file: { path: endpoints.yaml } }")
        #expect(file.clusters[0].discovery == .file(FileDiscoveryConfig(path: "/etc/meshgate/endpoints.yaml")))
        let etcd = try config("    discovery: { etcd: { endpoints: [\"http://127.0.0.1:2379\"], prefix: /meshgate/services/mesh/ } }")
        #expect(etcd.clusters[0].discovery == .etcd(EtcdDiscoveryConfig(
            endpoints: [SocketAddressSpec(host: "127.0.0.1", port: 2379)], prefix: "/meshgate/services/mesh/")))
    }

    @Test func refusalsNameTheField() {
        let cases: [(String, String)] = [
            ("    discovery: {}", "clusters[0].discovery: needs one source"),
            ("    discovery: { dns: { name: a } }", "clusters[0].discovery.dns.port"),
            ("    discovery: { dns: { srv: _x._tcp.a, port: 1 } }", "clusters[0].discovery.dns.srv"),
            ("    discovery: { dns: { name: a, port: 1, family: v5 } }", "clusters[0].discovery.dns.family"),
            ("    discovery: { etcd: { endpoints: [], prefix: /p } }", "clusters[0].discovery.etcd.endpoints"),
            ("    discovery: { file: { path: x, refresh: 1s } }", "clusters[0].discovery.file.refresh: unknown key"),
            ("    endpoints: []", "clusters[0].endpoints: a cluster needs at least one endpoint, or a `discovery:` source"),
        ]
        for (yaml, expected) in cases {
            do {
                _ = try config(yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
                #expect("\(error)".contains("/etc/meshgate/mesh.yaml:"))
            }
        }
    }

    @Test func fileSourceReadsListsAndMappingsAndLocatesErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mg-file-sd-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("eps.yaml").path
        try "- address: 127.0.0.1:1\n- { address: 127.0.0.1:2, weight: 3, metadata: { zone: b } }\n".write(toFile: path, atomically: true, encoding: .utf8)
        let list = try FileDiscovery.read(path).get()
        #expect(list.map(\.address.port) == [1, 2] && list[1].weight == 3 && list[1].metadata == ["zone": "b"])
        try #"{"endpoints": [{"address": "[::1]:7"}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try FileDiscovery.read(path).get().map(\.address.host) == ["::1"])
        try "endpoints:\n  - address: 127.0.0.1:1\n  - address: nope\n".write(toFile: path, atomically: true, encoding: .utf8)
        guard case .failure(let failure) = FileDiscovery.read(path) else { Issue.record("accepted a bad address"); return }
        #expect(failure.description.contains("\(path):3:") && failure.description.contains("endpoints[1].address"), "\(failure)")
        #expect((try? FileDiscovery.read(dir.appendingPathComponent("missing.yaml").path).get()) == nil)
    }
}
