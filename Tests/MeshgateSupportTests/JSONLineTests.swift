import Foundation
import Testing
@testable import MeshgateSupport

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
}
