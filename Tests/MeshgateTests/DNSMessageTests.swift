import Testing
@testable import GatewayHost

@Suite struct DNSMessageTests {
    /// A response to `id` with one question (`mesh.test`), then `records`
    /// (already encoded, names may point at offset 12, the question's name).
    func response(id: UInt16 = 7, flags: UInt16 = 0x8180, answers: [[UInt8]], additionals: [[UInt8]] = []) -> [UInt8] {
        var out: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), UInt8(flags >> 8), UInt8(flags & 0xff), 0, 1,
                            0, UInt8(answers.count), 0, 0, 0, UInt8(additionals.count)]
        out += [4] + Array("mesh".utf8) + [4] + Array("test".utf8) + [0, 0, 1, 0, 1]
        for r in answers + additionals { out += r }
        return out
    }

    /// A record owned by the question's name (pointer to offset 12).
    func record(type: UInt16, ttl: UInt32 = 30, _ data: [UInt8]) -> [UInt8] {
        [0xc0, 12, UInt8(type >> 8), UInt8(type & 0xff), 0, 1,
         UInt8(ttl >> 24), UInt8((ttl >> 16) & 0xff), UInt8((ttl >> 8) & 0xff), UInt8(ttl & 0xff),
         UInt8(data.count >> 8), UInt8(data.count & 0xff)] + data
    }

    @Test func queryBytes() throws {
        let q = try DNSMessage.query(id: 0x1234, name: "mesh.test.", type: .srv)
        #expect(q == [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 4] + Array("mesh".utf8) + [4] + Array("test".utf8) + [0, 0, 33, 0, 1])
        #expect(throws: DNSMessageError.self) { try DNSMessage.query(id: 1, name: "a..b", type: .a) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.query(id: 1, name: String(repeating: "x", count: 64), type: .a) }
    }

    @Test func addressRecordsWithCompression() throws {
        let r = try DNSMessage.parseResponse(response(answers: [record(type: 1, [127, 0, 0, 2]),
                                                                record(type: 28, ttl: 5, [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1])]),
                                             expectedID: 7)
        #expect(r.rcode == 0 && !r.truncated)
        #expect(r.answers == [DNSRecord(name: "mesh.test", ttl: 30, data: .a("127.0.0.2")),
                              DNSRecord(name: "mesh.test", ttl: 5, data: .aaaa("2001:db8::1"))])
    }

    @Test func srvWithTargetAndGlue() throws {
        // target "r1" + pointer to "mesh.test" at 12
        let srv = record(type: 33, [0, 10, 0, 3, 0xc3, 0x5d, 2] + Array("r1".utf8) + [0xc0, 12])
        let glueName: [UInt8] = [2] + Array("r1".utf8) + [0xc0, 12]
        let glue = glueName + [0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 10, 0, 0, 7]
        let r = try DNSMessage.parseResponse(response(answers: [srv], additionals: [glue]), expectedID: nil)
        #expect(r.answers[0].data == .srv(priority: 10, weight: 3, port: 50013, target: "r1.mesh.test"))
        #expect(r.additionals == [DNSRecord(name: "r1.mesh.test", ttl: 9, data: .a("10.0.0.7"))])
    }

    @Test func rcodeAndTruncation() throws {
        #expect(try DNSMessage.parseResponse(response(flags: 0x8183, answers: []), expectedID: 7).rcode == 3)
        #expect(try DNSMessage.parseResponse(response(flags: 0x8380, answers: []), expectedID: 7).truncated)
    }

    @Test func malformedInputThrows() {
        let good = response(answers: [record(type: 1, [1, 2, 3, 4])])
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(Array(good.prefix(good.count - 2)), expectedID: 7) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(good, expectedID: 8) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(response(flags: 0x0100, answers: []), expectedID: 7) }
        var loop = good
        loop[12] = 0xc0; loop[13] = 12  // the question's name points at itself
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(loop, expectedID: 7) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(response(answers: [record(type: 1, [1, 2, 3])]), expectedID: 7) }
    }

    @Test func randomBytesNeverTrap() {
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        for _ in 0..<5000 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            var bytes = (0..<Int(seed % 96)).map { i -> UInt8 in UInt8(truncatingIfNeeded: (seed >> UInt64(i % 56)) &+ UInt64(i)) }
            if bytes.count > 2 { bytes[2] |= 0x80 }
            _ = try? DNSMessage.parseResponse(bytes, expectedID: nil)
        }
    }
}
