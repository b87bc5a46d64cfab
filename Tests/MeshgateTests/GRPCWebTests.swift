import MeshgateHTTP2
import NIOCore
import Testing
@testable import GatewayHost
@testable import MeshgateConfig
@testable import MeshgateControl

/// gRPC-Web's pieces that need no socket: the streaming base64 of text
/// bodies, the trailer frame, the content types, the translated head and
/// CORS, and the `grpc_web`/`cors` config.
@Suite struct GRPCWebTests {
    let allocator = ByteBufferAllocator()

    private func buffer(_ bytes: [UInt8]) -> ByteBuffer {
        var b = allocator.buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        return b
    }

    private func text(_ b: ByteBuffer) -> String { String(decoding: b.readableBytesView, as: UTF8.self) }

    @Test func encoderCarriesPartialGroupsAcrossChunksAndPadsOnlyAtTheEnd() {
        let data = (0..<50).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        // Every split into chunks of 1, 2, 4, 5 and 7 bytes encodes like the whole.
        let whole: String = {
            var e = GRPCWebBase64.Encoder()
            var out = e.encode(buffer(data), allocator: allocator)
            var last = e.finish(allocator: allocator)
            out.writeBuffer(&last)
            return text(out)
        }()
        // 50 bytes: 16 whole groups, then 2 bytes padded with one "=".
        #expect(whole.count == 68 && whole.hasSuffix("=") && !whole.dropLast().contains("="))
        for size in [1, 2, 4, 5, 7] {
            var e = GRPCWebBase64.Encoder()
            var out = ""
            for start in stride(from: 0, to: data.count, by: size) {
                out += text(e.encode(buffer(Array(data[start..<min(start + size, data.count)])), allocator: allocator))
            }
            out += text(e.finish(allocator: allocator))
            #expect(out == whole, "chunks of \(size)")
        }
        var e = GRPCWebBase64.Encoder()
        #expect(text(e.encode(buffer(Array("Man".utf8)), allocator: allocator)) == "TWFu")
        #expect(text(e.encode(buffer(Array("Ma".utf8)), allocator: allocator)) == "")
        #expect(text(e.finish(allocator: allocator)) == "TWE=")
        #expect(text(e.finish(allocator: allocator)) == "")
        // A carried byte never takes bits from an older carry.
        #expect(text(e.encode(buffer([0x00, 0xff]), allocator: allocator)) == "")
        #expect(text(e.encode(buffer([0x01, 0x02]), allocator: allocator)) == "AP8B")
        #expect(text(e.finish(allocator: allocator)) == "Ag==")
    }

    @Test func decoderTakesAnySplitAndPaddedPiecesInOneStream() throws {
        var d = GRPCWebBase64.Decoder()
        var out: [UInt8] = []
        // "TWFu" "TWE=" "TQ==" as one body, cut in odd places.
        for piece in ["TW", "FuTW", "E", "=TQ", "=="] {
            out += Array(try d.decode(buffer(Array(piece.utf8)), allocator: allocator).readableBytesView)
        }
        #expect(out == Array("ManMaM".utf8))
        #expect(d.isAtBoundary)
        _ = try d.decode(buffer(Array("TW".utf8)), allocator: allocator)
        #expect(!d.isAtBoundary)
        for bad in ["TW*u", "T===", "TW=u"] {
            var fresh = GRPCWebBase64.Decoder()
            #expect(throws: GRPCWebBase64.Decoder.Invalid.self, "\(bad)") {
                _ = try fresh.decode(buffer(Array(bad.utf8)), allocator: allocator)
            }
        }
    }

    @Test func trailersBecomeTheLastFrame() {
        var frame = allocator.buffer(capacity: 64)
        GRPCWebStream.writeTrailerFrame([("grpc-status", "0"), ("grpc-message", "ok"), (":status", "200")], to: &frame)
        let bytes = Array(frame.readableBytesView)
        let body = "grpc-status:0\r\ngrpc-message:ok\r\n"
        #expect(bytes[0] == 0x80)
        #expect(bytes[1..<5].elementsEqual([0, 0, 0, UInt8(body.utf8.count)]))
        #expect(String(decoding: bytes[5...], as: UTF8.self) == body)
    }

    @Test func contentTypesAndTheUpstreamHead() {
        #expect(GRPCWebRequest(contentType: "application/grpc") == nil)
        #expect(GRPCWebRequest(contentType: "application/grpc-webby") == nil)
        #expect(GRPCWebRequest(contentType: "application/json") == nil)
        let binary = GRPCWebRequest(contentType: "application/grpc-web")!
        #expect(!binary.text && binary.responseContentType == "application/grpc-web+proto")
        let text = GRPCWebRequest(contentType: "Application/GRPC-Web-Text+proto; charset=utf-8")!
        #expect(text.text && text.responseContentType == "application/grpc-web-text+proto")
        let json = GRPCWebRequest(contentType: "application/grpc-web+json")!
        let head = json.upstreamHead([(":method", "POST"), (":path", "/a.B/C"), ("content-type", "application/grpc-web+json"),
                                      ("content-length", "12"), ("x-grpc-web", "1"), ("te", "x"), ("x-user", "u")])
        #expect(Array(head).map { "\($0.name)=\($0.value)" } == [
            ":method=POST", ":path=/a.B/C", "x-user=u", "content-type=application/grpc+json", "te=trailers",
        ])
    }

    @Test func corsAnswersOnlyAllowedOrigins() {
        var cors = CORSConfig(allowedOrigins: ["https://app.example"])
        cors.maxAge = .seconds(600)
        cors.allowedHeaders = ["x-tenant"]
        let ok = GRPCWebCORS.preflight(cors, origin: "https://app.example")
        #expect(ok.status == 204)
        #expect(ok.fields["access-control-allow-origin"] == "https://app.example")
        #expect(ok.fields["access-control-max-age"] == "600")
        #expect(ok.fields["access-control-allow-headers"]?.hasSuffix(",x-tenant") == true)
        #expect(GRPCWebCORS.preflight(cors, origin: "https://evil.example").status == 403)
        #expect(GRPCWebCORS.preflight(nil, origin: "https://app.example").status == 403)
        #expect(GRPCWebCORS.responseFields(cors, origin: "https://evil.example").isEmpty)
        #expect(GRPCWebCORS.responseFields(cors, origin: "https://app.example")["access-control-expose-headers"]?.contains("grpc-status") == true)
    }

    private let listenerYAML = """
        listeners:
          - name: web
            address: 127.0.0.1:8443
            grpc_web: true
            CORS
            routes: [{ match: { service: a.B }, cluster: c }]
        clusters: [{ name: c, endpoints: [{ address: 127.0.0.1:1 }] }]
        """

    @Test func aReloadMayChangeCORSButNotGRPCWeb() throws {
        let on = try ConfigLoader.parse(listenerYAML.replacingOccurrences(of: "CORS", with: "cors: { allowed_origins: [\"*\"] }"), file: "web.yaml")
        var corsChanged = on
        corsChanged.listeners[0].cors?.allowedOrigins = ["https://b.example"]
        #expect(Gateway.restartOnlyDifference(on, corsChanged) == nil)
        var off = on
        off.listeners[0].grpcWeb = false
        #expect(Gateway.restartOnlyDifference(on, off)?.contains("grpc_web") == true)
    }

    @Test func grpcWebAndCORSConfig() throws {
        let config = try ConfigLoader.parse(listenerYAML.replacingOccurrences(of: "CORS", with: "cors: { allowed_origins: [\"https://a.example\", \"*\"], max_age: 10m }"), file: "web.yaml")
        #expect(config.listeners[0].grpcWeb)
        #expect(config.listeners[0].cors?.allowedOrigins == ["https://a.example", "*"])
        #expect(config.listeners[0].cors?.maxAge == .seconds(600))
        for (cors, message) in [
            ("cors: { allowed_origins: [https://a.example/] }", "must be an origin"),
            ("cors: { allowed_origins: [] }", "list at least one origin"),
            ("cors: { allowed_origins: [\"*\"], allow_credentials: true }", "wildcard origin"),
        ] {
            do {
                _ = try ConfigLoader.parse(listenerYAML.replacingOccurrences(of: "CORS", with: cors), file: "web.yaml")
                Issue.record("accepted \(cors)")
            } catch {
                #expect(error.message.contains(message), "\(error)")
                #expect(error.description.hasPrefix("web.yaml:5:"), "\(error)")
            }
        }
        let noWeb = listenerYAML.replacingOccurrences(of: "grpc_web: true", with: "grpc_web: false")
            .replacingOccurrences(of: "CORS", with: "cors: { allowed_origins: [\"*\"] }")
        do {
            _ = try ConfigLoader.parse(noWeb, file: "web.yaml")
            Issue.record("cors accepted without grpc_web")
        } catch {
            #expect(error.message.contains("set grpc_web: true"))
        }
    }
}
