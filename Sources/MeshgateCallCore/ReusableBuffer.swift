/// A list reused from event to event: emptying it resets a count instead of
/// freeing storage, so a warm buffer costs neither an allocation nor a
/// generic array operation per event. Two uses:
/// - `ActionBuffer`, the actions of one event, written by
///   `CallStateMachine.handle` and read by its executor (actions are plain
///   values: `clear()` has nothing to release);
/// - `EventQueue`, the events that arrive for a call while it processes one
///   (kept per loop in `CallScratch`; events carry buffers and headers, so
///   it is emptied with `removeAll(releasingWith:)`).
public struct ReusableBuffer<Element> {
    // Inlinable: the proxy fills and drains these per event from another
    // module; a call through an unspecialized generic would cost more than
    // the work itself.
    @usableFromInline var storage: [Element] = []
    @usableFromInline var usedCount = 0
    @inlinable public var count: Int { usedCount }

    @inlinable public init(capacity: Int = 0) {
        // reserveCapacity(0) is not free: on the empty array it makes a
        // "new" empty buffer (a call and a release), and empty buffers are
        // made for every event a call processes.
        if capacity > 0 { storage.reserveCapacity(capacity) }
    }

    @inlinable public var isEmpty: Bool { count == 0 }

    @inlinable public subscript(index: Int) -> Element {
        precondition(index < count)
        return storage[index]
    }

    @inlinable public mutating func append(_ element: Element) {
        if count < storage.count {
            storage[count] = element
        } else {
            storage.append(element)
        }
        usedCount += 1
    }

    /// Empties the buffer; the old elements stay in their slots until
    /// overwritten (for elements that own nothing).
    @inlinable public mutating func clear() {
        usedCount = 0
    }

    /// Empties the buffer, overwriting each used slot with `filler` so that
    /// what the old elements held is released now.
    @inlinable public mutating func removeAll(releasingWith filler: Element) {
        for i in 0..<count { storage[i] = filler }
        usedCount = 0
    }

    /// The elements, for tests and logs.
    @inlinable public var elements: ArraySlice<Element> { storage[..<count] }
}

public typealias ActionBuffer = ReusableBuffer<CallAction>
public typealias EventQueue = ReusableBuffer<CallEvent>
