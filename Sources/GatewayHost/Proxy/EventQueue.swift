/// The events that arrive for a call while it is processing one, in order.
/// Reused by the loop's calls (`CallScratch`): emptying it overwrites each
/// used slot with a payload-free event (releasing what it held) and resets
/// the count, so a warm queue costs no allocation and no generic array
/// operation.
struct EventQueue {
    private var storage: [CallEvent] = []
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    subscript(index: Int) -> CallEvent {
        precondition(index < count)
        return storage[index]
    }

    mutating func append(_ event: CallEvent) {
        if count < storage.count {
            storage[count] = event
        } else {
            storage.append(event)
        }
        count += 1
    }

    mutating func removeAll() {
        for i in 0..<count { storage[i] = .deadlineExpired }
        count = 0
    }
}
