import Testing
import MeshgateGRPC

@Suite struct GRPCMessageLengthScannerTests {
    private func message(_ length: Int) -> [UInt8] {
        [0, UInt8(length >> 24 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
            + [UInt8](repeating: 0x61, count: length)
    }

    private func scan(_ stream: [UInt8], chunk: Int, limit: Int) -> Int? {
        var scanner = GRPCMessageLengthScanner()
        var start = 0
        while start < stream.count {
            let end = min(start + chunk, stream.count)
            let found = stream[start..<end].withUnsafeBytes { scanner.scan($0, limit: limit) }
            if let found { return found }
            start = end
        }
        return nil
    }

    /// Messages under, at and over the limit, cut into chunks of every
    /// size from 1 byte (prefixes split across chunks) to the whole stream.
    @Test func findsTheFirstMessageOverTheLimitWhateverTheChunking() {
        let fine = message(0) + message(10) + message(100) + message(7)
        let over = fine + message(101) + message(5000)
        for chunk in [1, 2, 3, 4, 5, 6, 7, 13, 64, 1000, over.count] {
            #expect(scan(fine, chunk: chunk, limit: 100) == nil, "chunk \(chunk)")
            #expect(scan(over, chunk: chunk, limit: 100) == 101, "chunk \(chunk)")
            #expect(scan(over, chunk: chunk, limit: 1000) == 5000, "chunk \(chunk)")
            #expect(scan(over, chunk: chunk, limit: 5000) == nil, "chunk \(chunk)")
        }
    }

    /// The 32-bit length is read big-endian, all four bytes.
    @Test func readsTheWholeLength() {
        #expect(scan(message(0x0102) , chunk: 3, limit: 0x0101) == 0x0102)
        let huge: [UInt8] = [0, 0x7f, 0xff, 0xff, 0xff]
        #expect(scan(huge, chunk: 2, limit: 1 << 20) == 0x7fff_ffff)
    }
}
