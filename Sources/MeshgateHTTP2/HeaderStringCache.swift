/// Turns received header values the gateway reads as text (a request's
/// `:path`, through `HTTP2Connection.cachedString`) into Strings, reusing
/// the String made for the same bytes earlier on the connection: header
/// lists keep bytes, and these few repeat on every stream.
///
/// Why: a String longer than 15 UTF-8 bytes is a heap allocation, and a
/// connection receives the same path on stream after stream. Shorter
/// strings are stored inline and are made directly.
///
/// 32 slots in pairs (a pair is a two-entry LRU: the newest String in the
/// even slot); a hit is a byte comparison. Owned by one connection, used on
/// its event loop only.
struct HeaderStringCache {
    private static let slotCount = 32
    static let longestCached = 256
    private var slots: [String]

    init() {
        slots = Array(repeating: "", count: Self.slotCount)
    }

    mutating func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        let count = bytes.count
        // Short ones are inline (no allocation to save); long ones are not
        // kept: 32 of them for the connection's life would be up to 32
        // header limits of memory no cap counts, and real paths are short.
        guard count > 15, count <= Self.longestCached else { return String(decoding: bytes, as: UTF8.self) }
        let raw = UnsafeRawBufferPointer(bytes)
        let head = raw.loadUnaligned(as: UInt64.self)
        let tail = raw.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
        let mix = (head ^ (tail << 29 | tail >> 35) ^ UInt64(count)) &* 0x9E37_79B9_7F4A_7C15
        let newest = Int(truncatingIfNeeded: mix >> 60) << 1
        if Self.same(slots[newest], bytes) { return slots[newest] }
        if Self.same(slots[newest + 1], bytes) {
            slots.swapAt(newest, newest + 1)
            return slots[newest]
        }
        let made = String(decoding: bytes, as: UTF8.self)
        slots[newest + 1] = slots[newest]
        slots[newest] = made
        return made
    }

    private static func same(_ cached: String, _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        cached.utf8.withContiguousStorageIfAvailable { $0.count == bytes.count && $0.elementsEqual(bytes) } ?? false
    }
}
