import Testing
@testable import MeshgateDiscovery

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

    @Test func ednsQueryCarriesAnOPTRecord() throws {
        let q = try DNSMessage.query(id: 0x1234, name: "mesh.test", type: .a, udpPayload: 1232)
        let plain = try DNSMessage.query(id: 0x1234, name: "mesh.test", type: .a)
        #expect(q[10...11] == [0, 1])  // ARCOUNT 1
        #expect(Array(q[12..<plain.count]) == Array(plain[12...]))
        // Root owner, type 41, class = 1232 (0x04d0), TTL 0, RDLENGTH 0.
        #expect(Array(q[plain.count...]) == [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0])
        // A response's OPT record (class = payload size, not IN) is skipped.
        let opt: [UInt8] = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        let r = try DNSMessage.parseResponse(response(answers: [record(type: 1, [127, 0, 0, 9])], additionals: [opt]), expectedID: 7)
        #expect(r.answers.map(\.data) == [.a("127.0.0.9")] && r.additionals.isEmpty)
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

    /// Random bytes never trap: each input parses (to a response carrying
    /// the id its first two bytes spell) or is refused with a
    /// DNSMessageError, and most are refused. Random bytes alone are all
    /// refused at the header, so valid responses with a few bytes changed
    /// go through too: they reach every stage of the parser, and both
    /// outcomes must occur (a parser that refused, or accepted, every
    /// input would fail here).
    @Test func randomBytesNeverTrap() throws {
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        func parse(_ bytes: [UInt8]) -> Bool {
            do {
                let response = try DNSMessage.parseResponse(bytes, expectedID: nil)
                #expect(response.id == UInt16(bytes[0]) << 8 | UInt16(bytes[1]))
                return true
            } catch {
                return false
            }
        }
        var refused = 0
        for _ in 0..<5000 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            var bytes = (0..<Int(seed % 96)).map { i -> UInt8 in UInt8(truncatingIfNeeded: (seed >> UInt64(i % 56)) &+ UInt64(i)) }
            if bytes.count > 2 { bytes[2] |= 0x80 }
            if !parse(bytes) { refused += 1 }
        }
        #expect(refused > 2500, "random bytes should mostly be refused (\(5000 - refused) parsed)")

        let good = response(answers: [record(type: 1, [10, 0, 0, 1]), record(type: 1, [10, 0, 0, 2])],
                            additionals: [record(type: 28, Array(repeating: 0, count: 16))])
        #expect(parse(good))
        var mutantsParsed = 0, mutantsRefused = 0
        for _ in 0..<5000 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            var bytes = good
            for k in 0..<(1 + Int(seed % 3)) {
                let at = 2 + Int((seed >> UInt64(8 + 16 * k)) % UInt64(bytes.count - 2))
                bytes[at] = UInt8(truncatingIfNeeded: seed >> UInt64(3 + 7 * k))
            }
            bytes[2] |= 0x80
            if parse(bytes) { mutantsParsed += 1 } else { mutantsRefused += 1 }
        }
        #expect(mutantsParsed > 500 && mutantsRefused > 500, "mutants: \(mutantsParsed) parsed, \(mutantsRefused) refused")
    }

    @Test func nameLimits() throws {
        let label63 = String(repeating: "x", count: 63)
        _ = try DNSMessage.query(id: 1, name: label63 + ".test", type: .a)
        // 4 x 63-byte labels plus dots: 255 bytes, past the 253 a name may spell.
        let long = Array(repeating: label63, count: 4).joined(separator: ".")
        #expect(throws: DNSMessageError.self) { try DNSMessage.query(id: 1, name: long, type: .a) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.query(id: 1, name: "", type: .a) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.query(id: 1, name: ".test", type: .a) }
    }

    @Test func ipv6Formatting() throws {
        func format(_ groups: [UInt16]) throws -> String? {
            let data = groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
            let r = try DNSMessage.parseResponse(response(answers: [record(type: 28, data)]), expectedID: 7)
            guard case .aaaa(let text) = r.answers.first?.data else { return nil }
            return text
        }
        #expect(try format([0, 0, 0, 0, 0, 0, 0, 1]) == "::1")
        #expect(try format([0, 0, 0, 0, 0, 0, 0, 0]) == "::")
        #expect(try format([0xfe80, 0, 0, 0, 0, 0, 0, 0]) == "fe80::")
        // A lone zero group is not compressed; of two equal runs the first is.
        #expect(try format([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]) == "2001:db8:0:1:1:1:1:1")
        #expect(try format([1, 0, 0, 2, 0, 0, 3, 4]) == "1::2:0:0:3:4")
        #expect(try format([0x2001, 0, 0, 1, 0, 0, 0, 1]) == "2001:0:0:1::1")
        #expect(try format([0xABCD, 0x0a, 0xb, 0xc, 0xd, 0xe, 0xf, 0xff00]) == "abcd:a:b:c:d:e:f:ff00")
        // IPv4-mapped ends in dotted decimal (RFC 5952 §5); other ::ffff forms do not.
        #expect(try format([0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]) == "::ffff:1.2.3.4")
        #expect(try format([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]) == "::ffff:192.0.2.1")
        #expect(try format([0, 0, 0, 0, 0xffff, 0, 0x0102, 0x0304]) == "::ffff:0:102:304")
    }

    @Test func uncompressedNamesAndOtherClasses() throws {
        let owner: [UInt8] = [2] + Array("r2".utf8) + [4] + Array("mesh".utf8) + [4] + Array("test".utf8) + [0]
        let a = owner + [0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]
        let chaos = owner + [0, 1, 0, 3, 0, 0, 0, 60, 0, 4, 10, 9, 9, 9]  // class CH: skipped
        let txt = record(type: 16, [3] + Array("abc".utf8))
        let r = try DNSMessage.parseResponse(response(answers: [chaos, a, txt]), expectedID: 7)
        #expect(r.answers == [DNSRecord(name: "r2.mesh.test", ttl: 60, data: .a("10.1.2.3")),
                              DNSRecord(name: "mesh.test", ttl: 30, data: .other(type: 16))])
    }

    @Test func pointersMustPointBackInsideTheMessage() {
        var forward = response(answers: [record(type: 1, [1, 2, 3, 4])])
        forward[27] = 0xff; forward[28] = 0xff  // the answer's owner: 0x3fff, past the end
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(forward, expectedID: 7) }
        forward[27] = 0xc0; forward[28] = 40    // inside the message, but ahead of itself
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(forward, expectedID: 7) }
        var twoStep = response(answers: [record(type: 1, [1, 2, 3, 4])])
        twoStep[17] = 0xc0; twoStep[18] = 12    // "test" becomes a pointer back to "mesh": a cycle that passes through a label
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(twoStep, expectedID: 7) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse([], expectedID: nil) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse([0, 7, 0x81], expectedID: nil) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(response(answers: [record(type: 28, [1, 2, 3, 4])]), expectedID: 7) }
        #expect(throws: DNSMessageError.self) { try DNSMessage.parseResponse(response(answers: [record(type: 33, [0, 1, 0, 1, 0, 80])]), expectedID: 7) }
    }
}
