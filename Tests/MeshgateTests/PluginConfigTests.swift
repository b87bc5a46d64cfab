import FilterABI
import Testing
@testable import PluginKit

@Suite struct PluginConfigTests {
    private func parse(_ json: String, allowed: Set<String>) throws -> PluginConfig {
        var json = json
        return try json.withUTF8 { bytes in
            try PluginConfig(json: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                             allowedKeys: allowed)
        }
    }

    @Test func durationsTakeSecondsOrUnits() throws {
        let c = try parse(#"{"a": 1.0, "b": "250ms", "c": "2s", "d": 0, "e": "1m"}"#, allowed: ["a", "b", "c", "d", "e"])
        #expect(try c.durationMs("a", default: 5) == 1000)
        #expect(try c.durationMs("b", default: 5) == 250)
        #expect(try c.durationMs("c", default: 5) == 2000)
        #expect(try c.durationMs("d", default: 5) == 0)
        #expect(try c.durationMs("e", default: 5) == 60_000)
        #expect(try c.durationMs("absent", default: 5) == 5)
    }

    /// Foundation bridges 1, 0 and 1.0 to Bool as well: numbers must still
    /// read as numbers, and true/false must not.
    @Test func numbersAreNotBooleans() throws {
        let c = try parse(#"{"one": 1, "zero": 0, "yes": true}"#, allowed: ["one", "zero", "yes"])
        #expect(try c.int("one", default: 9, in: 0...5) == 1)
        #expect(try c.int("zero", default: 9, in: 0...5) == 0)
        #expect(throws: PluginConfig.Invalid.self) { try c.int("yes", default: 9, in: 0...5) }
    }

    @Test func statusCodesByNameOrNumber() throws {
        let c = try parse(#"{"codes": ["UNAVAILABLE", "deadline_exceeded", 8]}"#, allowed: ["codes"])
        #expect(try c.statusCodes("codes", default: []) == [14, 4, 8])
        let bad = try parse(#"{"codes": ["SOMETIMES"]}"#, allowed: ["codes"])
        #expect(throws: PluginConfig.Invalid.self) { try bad.statusCodes("codes", default: []) }
    }

    @Test func unknownKeysAndRangesAreRefused() {
        #expect(throws: PluginConfig.Invalid.self) { try parse(#"{"max_attempt": 3}"#, allowed: ["max_attempts"]) }
        #expect(throws: PluginConfig.Invalid.self) { try parse("[1, 2]", allowed: []) }
        #expect(throws: PluginConfig.Invalid.self) {
            try parse(#"{"n": 9}"#, allowed: ["n"]).int("n", default: 3, in: 2...5)
        }
    }
}
