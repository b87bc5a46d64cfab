/// An ordered list of HTTP/2 header fields (pseudo-headers first, as on the wire).
///
/// Names are lower-case, as HTTP/2 requires; lookups compare exactly.
///
/// Stored as bytes, one allocation per list: each field is its name length
/// and value length (`UInt32` each, native order) followed by the name and
/// value bytes. Received fields are appended as nghttp2 hands them over, and
/// a list is handed back to nghttp2 as pointers into it, so a header a proxy
/// only passes on never becomes a String. Strings are made only when asked
/// for (`subscript`, iteration); byte-level readers (`forEachField`,
/// `withValue`, `valueHasPrefix`) make none.
///
/// The bytes live in a `HeaderBytes` buffer written through a raw pointer
/// (an append is a bounds check and a copy, with no Array call per piece),
/// copied on write like an Array. Unlike an Array's, its sharing can be
/// asked (`isUniquelyReferenced`), so a list whose storage someone else
/// still holds is dropped instead of copied when emptied.
public struct HTTP2HeaderList: @unchecked Sendable, Sequence, ExpressibleByArrayLiteral {
    // @unchecked Sendable: a value, as an Array is: its storage is written
    // only through a list that holds the sole reference (copy on write),
    // and shared storage is only read.
    public typealias Element = (name: String, value: String)

    /// Keeps the bytes alive, and says whether another list shares them.
    private var storage: HeaderBytes?
    /// The storage's bytes (tail-allocated in it, so they move only with a
    /// new storage), read and written without going through the object:
    /// no retain of it per append or read.
    private var base: UnsafeMutablePointer<UInt8>?
    private var used = 0
    private var capacity = 0
    public private(set) var count = 0

    private static let lengthsSize = 2 * MemoryLayout<UInt32>.size
    /// The first storage of a list holds this many bytes at least (a typical
    /// gRPC head or trailers block fits).
    private static let initialCapacity = 256

    public init() {}
    public init(_ fields: [Element]) {
        for field in fields { append(field.name, field.value) }
    }
    public init(arrayLiteral elements: Element...) { self.init(elements) }

    public var isEmpty: Bool { count == 0 }

    /// The memory the list holds: its storage's capacity.
    public var storageBytes: Int { capacity }

    /// Whether no other list shares this one's storage (an empty list
    /// without storage counts as unshared).
    public mutating func isUniquelyReferenced() -> Bool {
        storage == nil || isKnownUniquelyReferenced(&storage!)
    }

    // MARK: Adding and removing

    public mutating func append(_ name: String, _ value: String) {
        var name = name, value = value
        name.withUTF8 { n in
            value.withUTF8 { v in append(name: UnsafeRawBufferPointer(n), value: UnsafeRawBufferPointer(v)) }
        }
    }

    /// `name` and `value` must not point into this list (growing it may
    /// free them).
    public mutating func append(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        precondition(name.count <= Int(UInt32.max) && value.count <= Int(UInt32.max), "a header field over 4 GiB")
        let fieldSize = Self.lengthsSize + name.count + value.count
        let at = reserveForAppend(fieldSize)
        let field = UnsafeMutableRawPointer(base! + at)
        field.storeBytes(of: UInt32(truncatingIfNeeded: name.count), toByteOffset: 0, as: UInt32.self)
        field.storeBytes(of: UInt32(truncatingIfNeeded: value.count), toByteOffset: 4, as: UInt32.self)
        if let source = name.baseAddress { (field + Self.lengthsSize).copyMemory(from: source, byteCount: name.count) }
        if let source = value.baseAddress { (field + Self.lengthsSize + name.count).copyMemory(from: source, byteCount: value.count) }
        used = at + fieldSize
        count += 1
    }

    public mutating func append(contentsOf other: HTTP2HeaderList) {
        guard other.used > 0, let source = other.base else { return }
        let length = other.used
        // `other` (a copy, even of this very list) keeps its bytes alive
        // while they are copied.
        let at = reserveForAppend(length)
        (base! + at).update(from: source, count: length)
        used = at + length
        count += other.count
    }

    /// Makes the storage this list's own with room for `extra` more bytes
    /// (growing geometrically, as an Array does); returns where they go.
    private mutating func reserveForAppend(_ extra: Int) -> Int {
        let needed = used + extra
        if needed <= capacity, storage != nil, isKnownUniquelyReferenced(&storage!) {
            return used
        }
        // Shared with room: a copy as large; too small: grown geometrically.
        let newCapacity = needed <= capacity ? capacity : Swift.max(needed, 2 * capacity, Self.initialCapacity)
        let grown = HeaderBytes.make(capacity: newCapacity)
        let bytes = grown.withUnsafeMutablePointerToElements { $0 }
        if let base, used > 0 { bytes.update(from: base, count: used) }
        storage = grown
        base = bytes
        capacity = newCapacity
        return used
    }

    public mutating func removeAll(named name: String) {
        guard contains(name) else { return }
        var kept = HTTP2HeaderList()
        kept.reserveBytes(used)
        var name = name
        name.withUTF8 { wanted in
            forEachField { n, v in
                if !Self.equal(n, UnsafeRawBufferPointer(wanted)) { kept.append(name: n, value: v) }
                return true
            }
        }
        self = kept
    }

    /// Room for about `n` fields of a typical size.
    public mutating func reserveCapacity(_ n: Int) { reserveBytes(n * 40) }

    private mutating func reserveBytes(_ bytes: Int) {
        guard bytes > capacity else { return }
        _ = reserveForAppend(bytes - used)
    }

    /// Empties the list, keeping its storage (to be filled again without
    /// allocating) only while it is at most `maxBytes` and not shared.
    public mutating func removeAll(keepingCapacityUpTo maxBytes: Int) {
        removeAll(keepingCapacity: capacity <= maxBytes)
    }

    /// Empties the list; keeps its storage when asked and nothing else
    /// shares it, so the list can be filled again without allocating. A
    /// shared storage is let go (an Array would allocate a new one here).
    public mutating func removeAll(keepingCapacity: Bool) {
        if keepingCapacity, storage != nil, isKnownUniquelyReferenced(&storage!) {
            used = 0
        } else {
            storage = nil
            base = nil
            capacity = 0
            used = 0
        }
        count = 0
    }

    // MARK: Reading

    /// Calls `body` with each field's name and value bytes, in order, while
    /// it returns true. The bytes are valid only inside `body`.
    public func forEachField(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool) {
        withUnsafeFieldBytes { Self.forEachField(in: $0, body) }
    }

    /// `body` with the list's bytes, for walking them with
    /// `forEachField(in:)` when the pointers must outlive one field.
    func withUnsafeFieldBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        // `self` (borrowed for the call) keeps the storage alive.
        body(UnsafeRawBufferPointer(start: base, count: used))
    }

    static func forEachField(in raw: UnsafeRawBufferPointer,
                             _ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool) {
        var offset = 0
        while offset < raw.count {
            let nameLength = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let valueLength = Int(raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
            let nameStart = offset + lengthsSize
            let valueStart = nameStart + nameLength
            offset = valueStart + valueLength
            let name = UnsafeRawBufferPointer(rebasing: raw[nameStart..<valueStart])
            let value = UnsafeRawBufferPointer(rebasing: raw[valueStart..<offset])
            if !body(name, value) { return }
        }
    }

    /// `body` with the bytes of the first value of `name`, or nil.
    public func withValue<R>(of name: String, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        var name = name
        return name.withUTF8 { wanted in
            var result: R?
            forEachField { n, v in
                guard Self.equal(n, UnsafeRawBufferPointer(wanted)) else { return true }
                result = body(v)
                return false
            }
            return result
        }
    }

    public func contains(_ name: String) -> Bool {
        withValue(of: name) { _ in true } ?? false
    }

    /// Whether the first value of `name` starts with `prefix` (no String made).
    public func valueHasPrefix(_ name: String, _ prefix: String) -> Bool {
        var prefix = prefix
        return prefix.withUTF8 { p in
            withValue(of: name) { v in
                v.count >= p.count && Self.equal(UnsafeRawBufferPointer(rebasing: v[0..<p.count]), UnsafeRawBufferPointer(p))
            } ?? false
        }
    }

    /// Whether the first value of `name` is exactly `expected`.
    public func value(of name: String, equals expected: String) -> Bool {
        var expected = expected
        return expected.withUTF8 { e in withValue(of: name) { Self.equal($0, UnsafeRawBufferPointer(e)) } ?? false }
    }

    /// The first value of `name`, or nil.
    public subscript(name: String) -> String? {
        withValue(of: name) { String(decoding: $0, as: UTF8.self) }
    }

    public func makeIterator() -> Iterator { Iterator(list: self) }

    /// The fields as Strings (made as they are read).
    public struct Iterator: IteratorProtocol {
        fileprivate let list: HTTP2HeaderList
        private var offset = 0

        fileprivate init(list: HTTP2HeaderList) { self.list = list }

        public mutating func next() -> Element? {
            guard offset < list.used else { return nil }
            return list.withUnsafeFieldBytes { raw in
                let nameLength = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let valueLength = Int(raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
                let nameStart = offset + HTTP2HeaderList.lengthsSize
                let valueStart = nameStart + nameLength
                offset = valueStart + valueLength
                return (String(decoding: raw[nameStart..<valueStart], as: UTF8.self),
                        String(decoding: raw[valueStart..<offset], as: UTF8.self))
            }
        }
    }

    /// Byte equality, a word at a time (names are short; no libc here).
    static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        var i = 0
        while i + 8 <= a.count {
            if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
            i += 8
        }
        while i < a.count {
            if a[i] != b[i] { return false }
            i += 1
        }
        return true
    }
}

extension HTTP2HeaderList: Equatable {
    public static func == (lhs: HTTP2HeaderList, rhs: HTTP2HeaderList) -> Bool {
        lhs.count == rhs.count && lhs.withUnsafeFieldBytes { l in rhs.withUnsafeFieldBytes { r in equal(l, r) } }
    }
}

/// A header list's bytes: how many are used and the room there is, then
/// the bytes. Changed only by a list that holds the sole reference
/// (`isKnownUniquelyReferenced`), as an Array's storage is.
final class HeaderBytes: ManagedBuffer<Int, UInt8> {
    /// A storage of `capacity` bytes (the header keeps the figure; the list
    /// reads its own copy).
    static func make(capacity: Int) -> HeaderBytes {
        unsafeDowncast(create(minimumCapacity: capacity) { _ in capacity }, to: HeaderBytes.self)
    }
}
