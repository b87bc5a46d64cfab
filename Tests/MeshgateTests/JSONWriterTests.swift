import MeshgateJSON
import MeshgateYAML
import Testing

/// The one JSON writer: string escapes, and documents without
/// hand-placed commas.
@Suite struct JSONWriterTests {
    @Test func stringsEscapeWhatJSONAndYAMLRequire() {
        #expect(JSONString.quoted("a\"b\\c") == #""a\"b\\c""#)
        #expect(JSONString.quoted("\n\r\t") == #""\n\r\t""#)
        #expect(JSONString.quoted("\u{1}\u{7F}\u{85}\u{2028}\u{FEFF}") == #""\u0001\u007f\u0085\u2028\ufeff""#)
        #expect(JSONString.quoted("é😀") == "\"é😀\"", "other characters stay raw")
    }

    @Test func theYAMLEmittersJSONFormUsesTheSameStrings() throws {
        let text = "k: \"a\\u0085b\\\"\"\n"
        let node = try YAMLParser.parse(text)
        #expect(node.jsonText == "{\"k\":" + JSONString.quoted("a\u{85}b\"") + "}")
    }

    @Test func objectsAndArraysPlaceTheirOwnCommas() {
        var json = JSONWriter()
        json.object { o in
            o.field("s", "x")
            o.field("none", nil as String?)
            o.field("n", 3)
            o.field("b", true)
            o.field("d") { $0.double(0.123456789, scale: 1000) }
            o.field("inf") { $0.double(.infinity) }
            o.field("a") { $0.array([1, 2, 3]) { $0.int($1) } }
            o.field("empty") { $0.array([Int]()) { $0.int($1) } }
            o.field("o") { $0.object { _ in } }
            o.key("raw")
            o.raw("{\"k\":1}")
            o.field("nested") { $0.array([["a": "1"], [:]]) { json, m in json.object { o in for (k, v) in m { o.field(k, v) } } } }
        }
        #expect(json.text == #"{"s":"x","none":null,"n":3,"b":true,"d":0.123,"inf":null,"a":[1,2,3],"empty":[],"o":{},"raw":{"k":1},"nested":[{"a":"1"},{}]}"#)
    }
}
