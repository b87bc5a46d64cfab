/// The actions of one event, written by `CallStateMachine.handle` and read
/// by its executor. Reused from event to event: clearing resets a count
/// (actions are plain values: nothing to release), so a warm buffer costs
/// neither an allocation nor a generic array operation per event.
struct ActionBuffer {
    private var storage: [CallAction] = []
    private(set) var count = 0

    init(capacity: Int = 0) {
        storage.reserveCapacity(capacity)
    }

    var isEmpty: Bool { count == 0 }

    subscript(index: Int) -> CallAction {
        precondition(index < count)
        return storage[index]
    }

    mutating func append(_ action: CallAction) {
        if count < storage.count {
            storage[count] = action
        } else {
            storage.append(action)
        }
        count += 1
    }

    mutating func clear() {
        count = 0
    }

    /// The actions, for tests and logs.
    var actions: ArraySlice<CallAction> { storage[..<count] }
}
