/// Turns received header names and values into Strings, reusing the String
/// made for the same bytes earlier on the connection.
///
/// Why: a String longer than 15 UTF-8 bytes is a heap allocation, and a
/// connection receives the same long fields on every stream (`:path`,
/// `content-type: application/grpc`, `user-agent`, `grpc-accept-encoding`):
/// about six allocations per proxied RPC. Shorter strings are stored inline
/// and are made directly.
///
/// A few direct-mapped slots, replaced on a miss; a hit is a byte comparison.
/// Owned by one connection, used on its event loop only.
struct HeaderStringCache {
    private static let slotCount = 16
    private var slots: [String]

    init() {
        slots = Array(repeating: "", count: Self.slotCount)
    }

    mutating func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        let count = bytes.count
        guard count > 15 else { return String(decoding: bytes, as: UTF8.self) }
        let mix = count &* 31 &+ Int(bytes[count - 1]) &* 7 &+ Int(bytes[count / 2])
        let slot = mix & (Self.slotCount - 1)
        let same = slots[slot].utf8.withContiguousStorageIfAvailable { cached in
            cached.count == count && cached.elementsEqual(bytes)
        } ?? false
        if same { return slots[slot] }
        let made = String(decoding: bytes, as: UTF8.self)
        slots[slot] = made
        return made
    }
}
