import NIOConcurrencyHelpers
import NIOCore

/// What clusters answered to reflection, shared by every event loop:
/// each cluster's service list (for `ttl`), which cluster knows a symbol
/// or a file (for the generation), and which cluster did not know one
/// (for `ttl`: a symbol nobody knows, asked again, is not asked of every
/// cluster again). A new generation (a reload, a membership change)
/// starts it empty. Symbols and file names come from clients, so each
/// table holds at most `maxEntries`, and a full one starts over; names
/// are at most `GatewayReflectionService.maxNameBytes` (1 KiB), so a
/// table holds at most about 4 MiB of them. A lock
/// per lookup: reflection is rare and never on the data path.
package final class ReflectionCache: Sendable {
    package static let ttl = TimeAmount.seconds(30)
    package static let maxEntries = 4096

    /// Upstream queries in flight per listener (not per generation: a
    /// reload must not reset the count of queries still running).
    package let queries = ReflectionQueryLimiter()

    private struct State {
        package var generation = 0
        /// nil services: the cluster was asked and could not answer (it is
        /// skipped, and not asked again, until the entry expires).
        package var services: [String: (services: [String]?, until: NIODeadline)] = [:]
        package var clusterBySymbol: [String: String] = [:]
        package var clusterByFile: [String: String] = [:]
        /// "cluster NUL query" of queries the cluster answered with an
        /// error (it does not know the symbol or file), until when.
        package var misses: [String: NIODeadline] = [:]
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    private func withState<R>(_ generation: Int, _ body: (inout State) -> R) -> R {
        state.withLockedValue { s in
            if s.generation != generation { s = State(generation: generation) }
            return body(&s)
        }
    }

    /// `.some(nil)`: recently failed; nil: unknown or expired.
    package func services(of cluster: String, generation: Int) -> [String]?? {
        withState(generation) { s in
            guard let entry = s.services[cluster], entry.until > .now() else { return nil }
            return .some(entry.services)
        }
    }

    package func store(services: [String]?, of cluster: String, generation: Int) {
        withState(generation) { $0.services[cluster] = (services, .now() + Self.ttl) }
    }

    package func cluster(symbol: String, generation: Int) -> String? {
        withState(generation) { $0.clusterBySymbol[symbol] }
    }

    package func cluster(file: String, generation: Int) -> String? {
        withState(generation) { $0.clusterByFile[file] }
    }

    package func store(cluster: String, symbol: String?, files: [String], generation: Int) {
        withState(generation) { s in
            if let symbol { Self.insert(cluster, for: symbol, into: &s.clusterBySymbol) }
            // Names from clients are refused past the limit before any
            // lookup; an upstream's file names are held to it here.
            for file in files where file.utf8.count <= GatewayReflectionService.maxNameBytes {
                Self.insert(cluster, for: file, into: &s.clusterByFile)
            }
        }
    }

    /// Whether `cluster` answered `query` (see `ReflectionRequest.cacheKey`)
    /// with an error less than `ttl` ago.
    package func isMiss(cluster: String, query: String, generation: Int) -> Bool {
        withState(generation) { s in
            guard let until = s.misses[cluster + "\u{0}" + query] else { return false }
            return until > .now()
        }
    }

    package func storeMiss(cluster: String, query: String, generation: Int) {
        withState(generation) { s in
            if s.misses.count >= Self.maxEntries {
                let now = NIODeadline.now()
                s.misses = s.misses.filter { $0.value > now }
            }
            Self.insert(.now() + Self.ttl, for: cluster + "\u{0}" + query, into: &s.misses)
        }
    }

    /// Sets `table[key]`, emptying a full table first.
    private static func insert<Value>(_ value: Value, for key: String, into table: inout [String: Value]) {
        if table[key] == nil && table.count >= maxEntries { table.removeAll(keepingCapacity: true) }
        table[key] = value
    }
}
