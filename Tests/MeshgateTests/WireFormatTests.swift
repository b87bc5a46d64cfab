import Foundation
import Testing
@testable import GatewayHost
import ProtoWire
@testable import MeshgateSupport
@testable import MeshgateRouting

@Suite struct ProtoWriterTests {
    /// A nested message written in place equals one built separately and
    /// copied in, for lengths that need one, two and three varint bytes.
    @Test(arguments: [0, 1, 127, 128, 300, 16_383, 16_384, 70_000])
    func nestedMatchesACopiedMessage(length: Int) throws {
        let payload = String(repeating: "x", count: length)
        var inner = ProtoWriter()
        inner.string(1, payload)
        var copied = ProtoWriter()
        copied.varint(1, 7)
        copied.message(2, inner)
        copied.varint(3, 9)

        var inPlace = ProtoWriter()
        inPlace.varint(1, 7)
        inPlace.nested(2) { $0.string(1, payload) }
        inPlace.varint(3, 9)
        #expect(inPlace.bytes == copied.bytes)

        var reader = ProtoReader(inPlace.bytes)
        var fields: [Int] = []
        while let (field, value) = try reader.next() {
            fields.append(field)
            if field == 2 {
                var nested = ProtoReader(value.slice)
                let first = try nested.next()
                #expect(first?.value.slice.count ?? 0 == length)
            }
        }
        #expect(fields == [1, 2, 3])
    }

    @Test func fixedBytesAreBigEndianIDs() {
        var w = ProtoWriter()
        w.fixedBytes(1, high: 0x0102_0304_0506_0708, low: 0x090a_0b0c_0d0e_0f10)
        w.fixedBytes(2, 0xa1a2_a3a4_a5a6_a7a8)
        #expect(w.bytes == [0x0a, 16] + Array(1...16) + [0x12, 8, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8])
    }

    @Test func resetKeepsNothingButCapacity() {
        var w = ProtoWriter()
        w.string(1, "abc")
        w.reset()
        #expect(w.bytes.isEmpty)
        w.string(1, Substring("ab"))
        w.string(2, "" as StaticString)
        #expect(w.bytes == [0x0a, 2, 0x61, 0x62])
    }
}

@Suite struct JSONLineTests {
    private func parse(_ line: JSONLine) throws -> [String: Any] {
        #expect(line.bytes.last == UInt8(ascii: "\n"))
        #expect(line.bytes.dropLast().contains(UInt8(ascii: "\n")) == false)
        return try #require(JSONSerialization.jsonObject(with: Data(line.bytes)) as? [String: Any])
    }

    @Test func everyStringParsesBackExactly() throws {
        let nasty = "q\"b\\n\nr\rt\t\u{01}\u{1f}\u{7f} ünï ✓ 𝄞"
        var line = JSONLine()
        line.start(message: "rpc")
        line.field("text", string: nasty)
        line.field("sub", string: Substring("a\"b"))
        line.field(nasty, int: 1)
        line.end()
        let object = try parse(line)
        #expect(object["msg"] as? String == "rpc")
        #expect(object["level"] as? String == "info")
        #expect(object["text"] as? String == nasty)
        #expect(object["sub"] as? String == "a\"b")
        #expect((object[nasty] as? NSNumber)?.intValue == 1)
    }

    @Test func numbersStayNumbers() throws {
        var line = JSONLine()
        line.start(message: "rpc")
        line.field("zero", int: 0)
        line.field("min", int: Int64.min)
        line.field("max", int: Int64.max)
        line.field("ms", thousandths: 1_234_005)
        line.field("small", thousandths: 7)
        line.field("negative", thousandths: -1500)
        line.end()
        let text = String(decoding: line.bytes, as: UTF8.self)
        #expect(text.contains(#""min":-9223372036854775808,"#))
        #expect(text.contains(#""ms":1234.005,"small":0.007,"negative":-1.500}"#))
        let object = try parse(line)
        #expect((object["zero"] as? NSNumber)?.intValue == 0)
        #expect((object["max"] as? NSNumber)?.int64Value == Int64.max)
        #expect(abs((object["ts"] as? Double ?? 0) - Date().timeIntervalSince1970) < 60)
    }

    @Test func splitKeepsServiceAndMethod() {
        #expect(GRPCPath.serviceAndMethod("/pkg.Service/Method") == ("pkg.Service", "Method"))
        #expect(GRPCPath.serviceAndMethod("/odd") == ("/odd", ""))
        #expect(GRPCPath.serviceAndMethod("/a/b/c") == ("/a/b/c", ""))
        #expect(GRPCPath.serviceAndMethod("//b") == ("//b", ""))
    }
}
