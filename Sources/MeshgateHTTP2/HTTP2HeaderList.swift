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
public struct HTTP2HeaderList: Sendable, Sequence, ExpressibleByArrayLiteral {
    public typealias Element = (name: String, value: String)

    private(set) var bytes: [UInt8] = []
    public private(set) var count = 0

    private static let lengthsSize = 2 * MemoryLayout<UInt32>.size
    /// Fields up to this size are staged on the stack and appended at once.
    private static let stagedFieldLimit = 512

    public init() {}
    public init(_ fields: [Element]) {
        for field in fields { append(field.name, field.value) }
    }
    public init(arrayLiteral elements: Element...) { self.init(elements) }

    public var isEmpty: Bool { count == 0 }

    /// The memory the list holds: its storage's capacity.
    public var storageBytes: Int { bytes.capacity }

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
        var lengths = (UInt32(truncatingIfNeeded: name.count), UInt32(truncatingIfNeeded: value.count))
        let fieldSize = Self.lengthsSize + name.count + value.count
        if fieldSize <= Self.stagedFieldLimit {
            // One Array append per field: each costs a call and a
            // uniqueness check (2 % of the proxy's CPU when it was three),
            // while copying a small field twice costs next to nothing.
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: fieldSize) { staged in
                let raw = UnsafeMutableRawBufferPointer(staged)
                withUnsafeBytes(of: &lengths) { raw.copyMemory(from: $0) }
                UnsafeMutableRawBufferPointer(rebasing: raw[Self.lengthsSize...]).copyMemory(from: name)
                UnsafeMutableRawBufferPointer(rebasing: raw[(Self.lengthsSize + name.count)...]).copyMemory(from: value)
                bytes.append(contentsOf: UnsafeBufferPointer(staged))
            }
        } else {
            // One growth for the three pieces (geometric, as Array's own).
            let needed = bytes.count + fieldSize
            if needed > bytes.capacity { bytes.reserveCapacity(Swift.max(needed, 2 * bytes.capacity)) }
            withUnsafeBytes(of: &lengths) { $0.withMemoryRebound(to: UInt8.self) { bytes.append(contentsOf: $0) } }
            name.withMemoryRebound(to: UInt8.self) { bytes.append(contentsOf: $0) }
            value.withMemoryRebound(to: UInt8.self) { bytes.append(contentsOf: $0) }
        }
        count += 1
    }

    public mutating func append(contentsOf other: HTTP2HeaderList) {
        bytes.append(contentsOf: other.bytes)
        count += other.count
    }

    public mutating func removeAll(named name: String) {
        guard contains(name) else { return }
        var kept = HTTP2HeaderList()
        kept.bytes.reserveCapacity(bytes.count)
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
    public mutating func reserveCapacity(_ n: Int) { bytes.reserveCapacity(n * 40) }

    /// Empties the list, keeping its storage (to be filled again without
    /// allocating) only while it is at most `maxBytes`.
    public mutating func removeAll(keepingCapacityUpTo maxBytes: Int) {
        bytes.removeAll(keepingCapacity: bytes.capacity <= maxBytes)
        count = 0
    }

    /// Empties the list; keeps its storage when nothing else shares it, so
    /// the list can be filled again without allocating.
    public mutating func removeAll(keepingCapacity: Bool) {
        bytes.removeAll(keepingCapacity: keepingCapacity)
        count = 0
    }

    // MARK: Reading

    /// Calls `body` with each field's name and value bytes, in order, while
    /// it returns true. The bytes are valid only inside `body`.
    public func forEachField(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool) {
        bytes.withUnsafeBytes { Self.forEachField(in: $0, body) }
    }

    /// `body` with the list's bytes, for walking them with
    /// `forEachField(in:)` when the pointers must outlive one field.
    func withUnsafeFieldBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes.withUnsafeBytes(body)
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
            guard offset < list.bytes.count else { return nil }
            return list.bytes.withUnsafeBytes { raw in
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
        lhs.count == rhs.count && lhs.bytes == rhs.bytes
    }
}

extension HTTP2HeaderList: CustomStringConvertible {
    public var description: String { "\(Array(self))" }
}
