import Foundation
import Testing
@testable import MeshgateEtcd
import NIOCore
import ProtoWire
@testable import MeshgateConfig
@testable import MeshgateSupport
@testable import MeshgateDiscovery
import MeshgateTestSupport

@Suite struct EtcdWireTests {
    @Test func theExampleEndpointsFileReads() throws {
        let folder = #filePath.replacingOccurrences(of: "Tests/MeshgateDiscoveryTests/DiscoveryTests.swift", with: "config/examples/")
        #expect(try FileDiscovery.read(folder + "endpoints.yaml").get().map(\.weight) == [1, 2])
    }

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
        let page = try EtcdMessages.rangeResponse(response.bytes)
        #expect(page.revision == 42 && !page.more && page.count == 0)
        #expect(page.kvs.count == 1)
        let read = page.kvs[0]
        #expect(read.keyString == "/svc/a" && read.valueString == "127.0.0.1:1" && read.lease == 7 && read.modRevision == 41)
        var more = response
        more.varint(3, 1)
        more.varint(4, 12_000)
        let next = try EtcdMessages.rangeResponse(more.bytes)
        #expect(next.more && next.count == 12_000)
    }

    /// RangeRequest fields as etcd's rpc.proto numbers them: key 1,
    /// range_end 2, limit 3, revision 4, keys_only 8.
    @Test func rangeRequestCarriesLimitRevisionAndKeysOnly() throws {
        let request = EtcdRangeRequest(key: Array("/svc/".utf8), rangeEnd: EtcdRangeRequest.end(ofPrefix: Array("/svc/".utf8)),
                                       limit: 225, revision: 77, keysOnly: true)
        var reader = ProtoReader(EtcdMessages.rangeRequest(request).bytes)
        var fields: [Int: [UInt8]] = [:]
        var numbers: [Int: Int64] = [:]
        while let (field, value) = try reader.next() {
            if field <= 2 { fields[field] = Array(value.slice) } else { numbers[field] = value.int64 }
        }
        #expect(fields == [1: Array("/svc/".utf8), 2: Array("/svc0".utf8)])
        #expect(numbers == [3: 225, 4: 77, 8: 1])
        // No limit, the newest revision, values: the fields are left out.
        var plain = ProtoReader(EtcdMessages.rangeRequest(EtcdRangeRequest(key: [1], rangeEnd: [2], limit: 0)).bytes)
        var count = 0
        while try plain.next() != nil { count += 1 }
        #expect(count == 2)
    }

    /// WatchCreateRequest asks for fragments (field 8), so that etcd never
    /// sends a batch larger than its request limit in one message; a
    /// fragment says more follow (WatchResponse field 7), and a put that
    /// created its key has version 1.
    @Test func watchAsksForFragmentsAndReadsThem() throws {
        var outer = ProtoReader(EtcdMessages.watchCreateRequest(prefix: Array("/p/".utf8), startRevision: 5).bytes)
        var create: [Int: Int64] = [:]
        while let (field, value) = try outer.next() {
            #expect(field == 1)
            var inner = ProtoReader(value.slice)
            while let (f, v) = try inner.next() {
                if f > 2 { create[f] = v.int64 }
            }
        }
        #expect(create == [3: 5, 4: 1, 8: 1])
        var kv = ProtoWriter()
        kv.bytes(1, Array("/p/a".utf8))
        kv.varint(4, 1)
        var event = ProtoWriter()
        event.message(2, kv)
        var response = ProtoWriter()
        response.varint(7, 1)
        response.message(11, event)
        let decoded = try EtcdMessages.watchResponse(response.bytes)
        #expect(decoded.fragment && decoded.events.first?.kv.version == 1)
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

/// The paged listing of an etcd prefix (`EtcdListing`), driven with the
/// pages etcd would answer.
@Suite struct EtcdListingTests {
    func kv(_ key: String) -> EtcdKeyValue {
        var w = ProtoWriter()
        w.bytes(1, Array(key.utf8))
        return try! EtcdKeyValue(w.bytes[...])
    }

    func page(_ keys: [String], more: Bool, count: Int64 = 0, revision: Int64 = 9) -> EtcdRangePage {
        EtcdRangePage(kvs: keys.map(kv), revision: revision, more: more, count: count)
    }

    func request(_ step: EtcdListing.Step) -> EtcdRangeRequest? {
        switch step {
        case .read(let r), .findOversizeKey(let r): return r
        case .done: return nil
        }
    }

    @Test func pagesAskForNoMoreKeysThanPlacesLeftAndReadAtOneRevision() throws {
        var listing = EtcdListing(prefix: "/p/", maxPageKeys: 3)
        let first = try #require(request(listing.next(placesLeft: 5)))
        #expect(first == EtcdRangeRequest(key: Array("/p/".utf8), rangeEnd: Array("/p0".utf8), limit: 3, revision: 0))
        listing.didRead(page(["/p/a", "/p/b", "/p/c"], more: true, count: 40, revision: 12))
        #expect(listing.revision == 12 && listing.keysUnderPrefix == 40)
        // Two places left: a page of two, from just after the last key, at revision 12.
        let second = try #require(request(listing.next(placesLeft: 2)))
        #expect(second == EtcdRangeRequest(key: Array("/p/c".utf8) + [0], rangeEnd: Array("/p0".utf8), limit: 2, revision: 12))
        listing.didRead(page(["/p/d", "/p/e"], more: true, count: 37, revision: 15))
        #expect(listing.revision == 12 && listing.keysUnderPrefix == 40)
        let last = listing.next(placesLeft: 0)
        #expect(last == .done && listing.keysLeftUnread)
    }

    @Test func badKeysTakeNoPlaceSoTheListingReadsOnUntilThePrefixEnds() throws {
        var listing = EtcdListing(prefix: "/p/", maxPageKeys: 2)
        _ = listing.next(placesLeft: 2)
        listing.didRead(page(["/p/bad1", "/p/bad2"], more: true, count: 3))
        let second = listing.next(placesLeft: 2)
        #expect(request(second)?.limit == 2)
        listing.didRead(page(["/p/good"], more: false))
        let last = listing.next(placesLeft: 1)
        #expect(last == .done && !listing.keysLeftUnread)
    }

    @Test func aPageOverTheMessageLimitIsAskedInHalvesThenTheKeyAloneIsSteppedOver() throws {
        var listing = EtcdListing(prefix: "/p/", maxPageKeys: 4)
        var limits: [Int?] = []
        var halved: [Bool] = []
        for _ in 0..<3 {
            limits.append(request(listing.next(placesLeft: 100))?.limit)
            halved.append(listing.pageTooLarge())
        }
        #expect(limits == [4, 2, 1] && halved == [true, true, true])
        // One key is over the limit with its value: read it without, to name it and go past it.
        let find = listing.next(placesLeft: 100)
        guard case .findOversizeKey(let keyOnly) = find else { Issue.record("\(find)"); return }
        #expect(keyOnly.keysOnly && keyOnly.limit == 1 && keyOnly.key == Array("/p/".utf8))
        listing.didRead(page(["/p/huge"], more: true, count: 9))
        let after = try #require(request(listing.next(placesLeft: 100)))
        #expect(!after.keysOnly && after.limit == 1 && after.key == Array("/p/huge".utf8) + [0])
        // Pages grow back once they fit.
        listing.didRead(page(["/p/x"], more: true))
        let two = listing.next(placesLeft: 100)
        listing.didRead(page(["/p/y", "/p/z"], more: true))
        let four = listing.next(placesLeft: 100)
        listing.didRead(page(["/p/zz"], more: false))
        let end = listing.next(placesLeft: 100)
        #expect(request(two)?.limit == 2 && request(four)?.limit == 4 && end == .done)
    }

    @Test func aKeyAloneOverTheLimitEndsTheListing() {
        var listing = EtcdListing(prefix: "/p/", maxPageKeys: 1)
        _ = listing.next(placesLeft: 1)
        let halved = listing.pageTooLarge()
        guard case .findOversizeKey = listing.next(placesLeft: 1) else { Issue.record("no key-only read"); return }
        let goesOn = listing.pageTooLarge()
        #expect(halved && !goesOn)
    }

    @Test func anEmptyPrefixIsOnePage() {
        var listing = EtcdListing(prefix: "/p/", maxPageKeys: 225)
        _ = listing.next(placesLeft: 10_000)
        listing.didRead(page([], more: false, count: 0, revision: 3))
        let end = listing.next(placesLeft: 10_000)
        #expect(end == .done && listing.revision == 3 && !listing.keysLeftUnread)
    }

    /// An honest page (keys and values at their limits) fills at most half
    /// of the largest message the gateway takes from etcd.
    @Test func honestPagesFitTheMessageLimit() {
        let honest = InputLimits.etcdPageKeys * (InputLimits.etcdKeyBytes + InputLimits.etcdValue.maxBytes + 64)
        #expect(InputLimits.etcdPageKeys >= 100 && honest <= InputLimits.etcdMessageBytes / 2)
    }
}

@Suite struct DiscoveryLogBudgetTests {
    @Test func aBadKeyIsLoggedOnceWhileItStaysBadAndTheRestWithinTheBudget() {
        var log = BadKeyLog()
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let first = log.shouldLog("/p/a", now: t0)
        let again = log.shouldLog("/p/a", now: t0)
        log.forget("/p/a")
        let afterForget = log.shouldLog("/p/a", now: t0)
        #expect(first == .log && again == .drop && afterForget == .log)
        let verdicts = (0..<100).map { log.shouldLog("/p/k\($0)", now: t0) }
        #expect(verdicts.filter { $0 != .drop }.count == BadKeyLog.linesPerMinute - 2)
        #expect(verdicts.filter { $0 == .logLast }.count == 1)
        let nextMinute = log.shouldLog("/p/k99", now: t0 + .seconds(61))
        #expect(nextMinute == .log)
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
