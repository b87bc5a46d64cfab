import NIOConcurrencyHelpers
import MeshgateYAML
import NIOPosix
import ProtoWire
import Testing
@testable import MeshgateConfig
@testable import MeshgateOwnServices

@Suite struct ReflectionWireTests {
    private func request(_ body: (inout ProtoWriter) -> Void) -> [UInt8] {
        var w = ProtoWriter()
        w.string(1, "example.host")
        body(&w)
        return w.bytes
    }

    @Test func decodesEveryRequestKind() throws {
        let list = try ReflectionRequest.decode(request { $0.string(7, "*") })
        #expect(list.host == "example.host" && list.request == .listServices)
        #expect(try ReflectionRequest.decode(request { $0.string(3, "mesh.proto") }).request == .fileByFilename("mesh.proto"))
        #expect(try ReflectionRequest.decode(request { $0.string(4, "mesh.v1.MeshService") }).request == .fileContainingSymbol("mesh.v1.MeshService"))
        #expect(try ReflectionRequest.decode(request { $0.string(6, "pkg.Type") }).request == .allExtensionNumbersOfType("pkg.Type"))
        let ext = try ReflectionRequest.decode(request { w in w.nested(5) { $0.string(1, "pkg.Type"); $0.varint(2, 42) } }).request
        #expect(ext == .fileContainingExtension(type: "pkg.Type", number: 42))
        #expect(ext.symbol == "pkg.Type")
        #expect(try ReflectionRequest.decode(request { _ in }).request == .empty)
        #expect(throws: ProtoDecodeError.self) { try ReflectionRequest.decode([0x22, 0x09, 0x61]) }
    }

    @Test func writesAListAnswerAnUpstreamParserReads() throws {
        let original = request { $0.string(7, "*") }
        let answer = ReflectionResponse.list(["a.v1.A", "b.v1.B"], host: "example.host", request: original)
        #expect(try ReflectionResponse.parse(answer) == .services(["a.v1.A", "b.v1.B"]))
        // valid_host (1) and original_request (2) come first, as servers write them.
        var reader = ProtoReader(answer)
        let first = try #require(try reader.next())
        #expect(first.field == 1 && String(decoding: first.value.slice, as: UTF8.self) == "example.host")
        let second = try #require(try reader.next())
        #expect(second.field == 2 && Array(second.value.slice) == original)
        let error = ReflectionResponse.error(code: 5, "symbol 'x' not found", host: "", request: original)
        #expect(try ReflectionResponse.parse(error) == .error(code: 5, message: "symbol 'x' not found"))
    }

    @Test func readsTheFileNamesOfADescriptorAnswer() throws {
        var w = ProtoWriter()
        w.nested(4) { files in
            files.nested(1) { $0.string(1, "greet.proto"); $0.string(2, "greet.v1") }
            files.nested(1) { $0.string(2, "no name first"); $0.string(1, "dep.proto") }
        }
        #expect(try ReflectionResponse.parse(w.bytes) == .files(["greet.proto", "dep.proto"]))
    }

    @Test func aServiceGoesToTheClusterOfTheFirstRouteThatCanTakeIt() throws {
        let config = try ConfigLoader.parse("""
            listeners:
              - name: l
                address: 127.0.0.1:1
                routes:
                  - { match: { method: /a.v1.A/Only }, cluster: first }
                  - { match: { service: a.v1.A }, cluster: second }
                  - { match: { service: b.v1.B, headers: [{ name: x-tenant, exact: blue }] }, cluster: blue }
                  - { match: { path_prefix: /c. }, cluster: third }
                  - { match: { path_prefix: /c.v1.Special/ }, cluster: never }
            clusters:
              - { name: first, endpoints: [{ address: 127.0.0.1:2 }] }
              - { name: second, endpoints: [{ address: 127.0.0.1:2 }] }
              - { name: blue, endpoints: [{ address: 127.0.0.1:2 }] }
              - { name: third, endpoints: [{ address: 127.0.0.1:2 }] }
              - { name: never, endpoints: [{ address: 127.0.0.1:2 }] }
            """, file: "mesh.yaml")
        let routes = config.listeners[0].routes
        #expect(GatewayReflectionService.cluster(forService: "a.v1.A", routes: routes) == "first")
        #expect(GatewayReflectionService.cluster(forService: "b.v1.B", routes: routes) == "blue")
        #expect(GatewayReflectionService.cluster(forService: "c.v1.Special", routes: routes) == "third")
        #expect(GatewayReflectionService.cluster(forService: "d.v1.D", routes: routes) == nil)
        #expect(GatewayReflectionService.cluster(forService: "a.v1.AB", routes: routes) == nil)
    }
}

/// Names are compared in place (a symbol's parents are looked up level by
/// level, none built as a string), with the results of building them, and
/// names over 1 KiB are refused before any lookup.
@Suite struct ReflectionNameTests {
    /// What the lookups answered when each level built `/service/`.
    func builtCluster(_ service: String, _ routes: [RouteConfig]) -> String? {
        let prefix = "/\(service)/"
        for route in routes {
            let m = route.match
            if let s = m.service, s != service { continue }
            if let method = m.method, !method.hasPrefix(prefix) { continue }
            if let p = m.pathPrefix, !(prefix.hasPrefix(p) || p.hasPrefix(prefix)) { continue }
            return route.cluster
        }
        return nil
    }

    @Test func inPlaceComparisonsAnswerAsBuiltNamesDid() throws {
        var routes: [RouteConfig] = []
        for (i, prefix) in ["/", "/c", "/c.", "/c.v1.S", "/c.v1.S/", "/c.v1.S/M", "/c.v1.SX/", "c.v1.S/", ""].enumerated() {
            var match = RouteMatchConfig()
            match.pathPrefix = prefix
            routes.append(RouteConfig(match: match, cluster: "p\(i)", filters: [], mark: YAMLMark(line: 1, column: 1)))
        }
        for (i, method) in ["/c.v1.S/M", "/c.v1.SX/M", "/c.v1/M"].enumerated() {
            var match = RouteMatchConfig()
            match.method = method
            routes.append(RouteConfig(match: match, cluster: "m\(i)", filters: [], mark: YAMLMark(line: 1, column: 1)))
        }
        for service in ["c.v1.S", "c.v1.SX", "c.v1", "c", "d.v1.S", "", "c.v1.S.M"] {
            for start in routes.indices {
                let tail = Array(routes[start...])
                #expect(GatewayReflectionService.cluster(forService: service, routes: tail) == builtCluster(service, tail), "\(service) from \(start)")
                #expect(GatewayReflectionService.cluster(forService: Substring(service), routes: tail) == builtCluster(service, tail))
            }
        }
    }

    @Test func ownFilesAreFoundByTheLongestOwnParent() {
        let health = GatewayReflectionService.ownFile(named: "grpc/health/v1/health.proto")
        let v1alpha = GatewayReflectionService.ownFile(named: "grpc/reflection/v1alpha/reflection.proto")
        #expect(health != nil && v1alpha != nil)
        #expect(GatewayReflectionService.ownFile(symbol: "grpc.health.v1.Health") == health)
        #expect(GatewayReflectionService.ownFile(symbol: "grpc.health.v1.Health.Check") == health)
        #expect(GatewayReflectionService.ownFile(symbol: "grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING") == health)
        #expect(GatewayReflectionService.ownFile(symbol: "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo") == v1alpha)
        #expect(GatewayReflectionService.ownFile(symbol: "grpc.health.v1.HealthX") == nil)
        #expect(GatewayReflectionService.ownFile(symbol: "grpc.health.v1") == nil)
        #expect(GatewayReflectionService.ownFile(symbol: String(repeating: "a.", count: 8192)) == nil)
    }

    @Test func namesOverOneKiBAreRefusedUnquoted() {
        let fits = String(repeating: "a.", count: 512)
        let long = fits + "a"
        #expect(fits.utf8.count == GatewayReflectionService.maxNameBytes)
        for make in [ReflectionRequest.fileContainingSymbol, ReflectionRequest.fileByFilename, ReflectionRequest.allExtensionNumbersOfType,
                     { ReflectionRequest.fileContainingExtension(type: $0, number: 7) }] {
            #expect(GatewayReflectionService.nameRefusal(make(fits)) == nil)
            let refusal = GatewayReflectionService.nameRefusal(make(long))
            #expect(refusal?.hasSuffix("is 1025 bytes, over the gateway's limit of 1024 bytes for reflection names") == true, "\(String(describing: refusal))")
        }
        #expect(GatewayReflectionService.nameRefusal(.listServices) == nil)
    }
}

@Suite struct RoutedFileDescriptorsTests {
    /// A FileDescriptorProto like mesh.proto: a message, two services, and
    /// source code info.
    private func file(package: String = "mesh.v1") -> [UInt8] {
        var w = ProtoWriter()
        w.string(1, "mesh.proto")
        if !package.isEmpty { w.string(2, package) }
        w.nested(4) { $0.string(1, "ProcessRequest") }
        w.nested(6) { s in s.string(1, "MeshService"); s.nested(2) { $0.string(1, "Process") } }
        w.nested(6) { s in s.string(1, "SampleControl"); s.nested(2) { $0.string(1, "SetFailureRate") } }
        w.nested(9) { $0.nested(1) { $0.string(3, "comment on service 1") } }
        w.string(12, "proto3")
        return w.bytes
    }

    private func fields(_ bytes: [UInt8]) throws -> [(Int, [UInt8])] {
        var reader = ProtoReader(bytes)
        var out: [(Int, [UInt8])] = []
        while let (field, value) = try reader.next() { out.append((field, Array(value.slice))) }
        return out
    }

    @Test func servicesNotRoutedThereAreRemovedWithTheSourceInfo() throws {
        let original = file()
        let routed = try RoutedFileDescriptors([original[...]], routed: { $0 == "mesh.v1.MeshService" })
        #expect(routed.removed == ["mesh.v1.SampleControl"])
        let kept = try fields(routed.files[0])
        #expect(kept.map(\.0) == [1, 2, 4, 6, 12])
        #expect(String(decoding: kept[3].1, as: UTF8.self).contains("MeshService"))
        // Everything else is byte for byte as it was.
        let before = try fields(original).filter { $0.0 != 9 && !String(decoding: $0.1, as: UTF8.self).contains("SampleControl") }
        #expect(before.map(\.1) == kept.map(\.1))
    }

    @Test func aFileWhoseServicesAreAllRoutedPassesUnchanged() throws {
        let original = file(package: "")
        let routed = try RoutedFileDescriptors([original[...]], routed: { ["MeshService", "SampleControl"].contains($0) })
        #expect(routed.removed.isEmpty && routed.files == [original])
        let none = try RoutedFileDescriptors([original[...]], routed: { _ in false })
        #expect(none.removed == ["MeshService", "SampleControl"])
        #expect(try fields(none.files[0]).map(\.0) == [1, 4, 12])
    }

    @Test func cacheKeysTellQuestionsApart() {
        #expect(ReflectionRequest.fileContainingSymbol("a.B").cacheKey == "symbol a.B")
        #expect(ReflectionRequest.fileByFilename("a.B").cacheKey == "file a.B")
        #expect(ReflectionRequest.fileContainingExtension(type: "a.B", number: 7).cacheKey == "extension a.B 7")
        #expect(ReflectionRequest.listServices.cacheKey == nil)
    }
}

@Suite struct ReflectionQueryLimiterTests {
    @Test func placesPassInOrderAndTheQueueIsBounded() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let limiter = ReflectionQueryLimiter()
        let started = NIOLockedValueBox<[Int]>([])
        let inFlight = ReflectionQueryLimiter.maxInFlight, capacity = inFlight + ReflectionQueryLimiter.maxWaiting
        let admitted = try loop.submit { () -> [Bool] in
            (0...capacity).map { i in limiter.admit(listener: "l", on: loop) { started.withLockedValue { $0.append(i) } } }
        }.wait()
        #expect(admitted == Array(repeating: true, count: capacity) + [false])
        #expect(started.withLockedValue { $0 } == Array(0..<inFlight))
        // Another listener has its own places.
        #expect(try loop.submit { limiter.admit(listener: "other", on: loop) { started.withLockedValue { $0.append(1000) } } }.wait())
        #expect(started.withLockedValue { $0.last } == 1000)
        try loop.submit { limiter.release(listener: "l") }.wait()
        try loop.submit {}.wait()
        #expect(started.withLockedValue { $0.last } == inFlight)
        #expect(limiter.load(of: "l") == (inFlight, ReflectionQueryLimiter.maxWaiting - 1))
        try loop.submit { for _ in 0..<capacity { limiter.release(listener: "l") } }.wait()
        try loop.submit {}.wait()
        #expect(started.withLockedValue { $0.count } == capacity + 1 && !started.withLockedValue { $0.contains(capacity) })
        #expect(limiter.load(of: "l") == (0, 0))
    }
}
