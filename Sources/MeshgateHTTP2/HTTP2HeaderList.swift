/// An ordered list of HTTP/2 header fields (pseudo-headers first, as on the wire).
///
/// Names are lower-case, as HTTP/2 requires; lookups compare exactly.
public struct HTTP2HeaderList: Sendable, Sequence, ExpressibleByArrayLiteral {
    public typealias Element = (name: String, value: String)
    public private(set) var fields: [Element]

    public init() { fields = [] }
    public init(_ fields: [Element]) { self.fields = fields }
    public init(arrayLiteral elements: Element...) { fields = elements }

    public mutating func append(_ name: String, _ value: String) {
        fields.append((name, value))
    }

    public mutating func append(contentsOf other: HTTP2HeaderList) {
        fields.append(contentsOf: other.fields)
    }

    public mutating func removeAll(named name: String) {
        fields.removeAll { $0.name == name }
    }

    public mutating func reserveCapacity(_ n: Int) { fields.reserveCapacity(n) }

    /// Empties the list; keeps its storage when nothing else shares it, so
    /// the list can be filled again without allocating.
    public mutating func removeAll(keepingCapacity: Bool) { fields.removeAll(keepingCapacity: keepingCapacity) }

    /// The first value of `name`, or nil.
    public subscript(name: String) -> String? {
        for field in fields where field.name == name { return field.value }
        return nil
    }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }

    public func makeIterator() -> IndexingIterator<[Element]> { fields.makeIterator() }
}

extension HTTP2HeaderList: Equatable {
    public static func == (lhs: HTTP2HeaderList, rhs: HTTP2HeaderList) -> Bool {
        lhs.fields.count == rhs.fields.count && zip(lhs.fields, rhs.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}
