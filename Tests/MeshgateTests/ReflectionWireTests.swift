import ProtoWire
import Testing
@testable import GatewayHost

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
