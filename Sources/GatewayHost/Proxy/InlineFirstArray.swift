/// An array that keeps its first element inline and only allocates for a
/// second: nearly every call makes one attempt, so the executor's table of
/// attempt handles costs no allocation. For small elements (class
/// references): the subscript copies, on purpose, since a `_read`/`_modify`
/// coroutine can malloc its frame when it is not inlined.
struct InlineFirstArray<Element>: RandomAccessCollection, MutableCollection {
    private var first_: Element?
    private var rest: [Element] = []

    init() {}

    typealias Indices = Range<Int>

    var startIndex: Int { 0 }
    var endIndex: Int { first_ == nil ? 0 : 1 + rest.count }
    var indices: Range<Int> { 0..<endIndex }

    subscript(position: Int) -> Element {
        get { position == 0 ? first_! : rest[position - 1] }
        set {
            if position == 0 { first_ = newValue } else { rest[position - 1] = newValue }
        }
    }

    mutating func append(_ element: Element) {
        if first_ == nil { first_ = element } else { rest.append(element) }
    }

    mutating func removeAll() {
        first_ = nil
        rest.removeAll()
    }
}

extension InlineFirstArray: Equatable where Element: Equatable {
    static func == (lhs: Self, rhs: Self) -> Bool { lhs.elementsEqual(rhs) }
}
