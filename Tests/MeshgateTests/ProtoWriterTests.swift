import Testing
import ProtoWire

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
