import NIOConcurrencyHelpers
import Synchronization

/// Counters that plugins declare and add to (ABI 1.1 `counter_declare`,
/// `counter_add`), shown on /metrics. The cells are allocated up front, so
/// an add is one relaxed atomic on a fixed address: no lock, from any
/// thread. Declaring takes a lock and happens once per counter.
public final class PluginCounters: Sendable {
    public static let shared = PluginCounters()
    public static let capacity = 4096

    public struct Declared: Sendable {
        public var name: String
        public var help: String
        public var labels: String
    }

    private final class Cell: Sendable {
        public let value = Atomic<UInt64>(0)
    }

    private let cells: [Cell] = (0..<PluginCounters.capacity).map { _ in Cell() }
    private let declared = NIOLockedValueBox<[Declared]>([])

    /// An id > 0, or 0 when the name or labels are not valid Prometheus.
    public func declare(name: String, help: String, labels: String) -> UInt64 {
        guard Self.isValidName(name), Self.areValidLabels(labels) else { return 0 }
        return declared.withLockedValue { list in
            if let i = list.firstIndex(where: { $0.name == name && $0.labels == labels }) { return UInt64(i + 1) }
            guard list.count < Self.capacity else { return 0 }
            list.append(Declared(name: name, help: help.replacingNewlines(), labels: labels))
            return UInt64(list.count)
        }
    }

    public func add(_ id: UInt64, _ delta: UInt64) {
        guard id > 0, id <= UInt64(Self.capacity) else { return }
        cells[Int(id - 1)].value.add(delta, ordering: .relaxed)
    }

    /// Every declared counter and its value, in declaration order.
    public func snapshot() -> [(Declared, UInt64)] {
        let list = declared.withLockedValue { $0 }
        return list.enumerated().map { ($0.element, cells[$0.offset].value.load(ordering: .relaxed)) }
    }

    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !name.isEmpty else { return false }
        func letter(_ c: UInt8) -> Bool { (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c == 58 }
        return letter(first) && name.utf8.allSatisfy { letter($0) || ($0 >= 48 && $0 <= 57) }
    }

    /// `key="value"` pairs separated by commas, values without raw quotes
    /// or newlines (what the exposition format takes as written).
    public static func areValidLabels(_ labels: String) -> Bool {
        if labels.isEmpty { return true }
        var rest = Substring(labels)
        while !rest.isEmpty {
            guard let eq = rest.firstIndex(of: "="), isValidName(String(rest[..<eq])), !rest[..<eq].contains(":") else { return false }
            rest = rest[rest.index(after: eq)...]
            guard rest.first == "\"" else { return false }
            rest = rest.dropFirst()
            guard let close = rest.firstIndex(of: "\"") else { return false }
            if rest[..<close].contains("\n") || rest[..<close].contains("\\") { return false }
            rest = rest[rest.index(after: close)...]
            if rest.first == "," { rest = rest.dropFirst(); if rest.isEmpty { return false } } else if !rest.isEmpty { return false }
        }
        return true
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
