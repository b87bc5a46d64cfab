import Testing
@testable import MeshgateHTTP2
import MeshgateTestSupport

@Suite struct StreamTableTests {
    /// Random inserts, lookups and removals checked against a Dictionary,
    /// with ids drawn both as a sliding window (as on a connection) and at
    /// random (collisions, probing across the end of the table, growth).
    @Test(arguments: [false, true])
    func behavesLikeADictionary(randomIDs: Bool) {
        var generator = SplitMix64(seed: randomIDs ? 7 : 11)
        var table = StreamTable()
        var reference: [Int32: StreamState] = [:]
        var next: Int32 = 1
        for step in 0..<20_000 {
            let roll = generator.next() % 10
            if roll < 5 {
                let id: Int32 = randomIDs ? Int32(generator.next() % 4_000) * 2 + 1 : next
                next += 2
                let state = StreamState(id: id, delegate: nil)
                table[id] = state
                reference[id] = state
            } else if roll < 8, let victim = reference.keys.randomElement(using: &generator) {
                #expect(table.removeValue(forKey: victim) === reference.removeValue(forKey: victim))
            } else {
                let id = Int32(generator.next() % 8_000) + 1
                #expect(table[id] === reference[id], "step \(step), id \(id)")
            }
            #expect(table.count == reference.count)
        }
        for (id, state) in reference { #expect(table[id] === state) }
        #expect(Set(table.values.map { ObjectIdentifier($0) }) == Set(reference.values.map { ObjectIdentifier($0) }))
        table.removeAll()
        #expect(table.count == 0 && table.values.isEmpty)
        #expect(table[reference.keys.first ?? 1] == nil)
    }

    @Test func anEmptyTableFindsNothing() {
        var table = StreamTable()
        #expect(table[1] == nil)
        #expect(table.removeValue(forKey: 1) == nil)
        table[3] = nil
        #expect(table.count == 0)
    }
}
