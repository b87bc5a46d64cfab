import NIOConcurrencyHelpers
import NIOCore

/// What clusters answered to reflection, shared by every event loop:
/// each cluster's service list (for `ttl`), and which cluster knows a
/// symbol or a file (for the generation). A new generation (a reload, a
/// membership change) starts it empty. A lock per lookup: reflection is
/// rare and never on the data path.
final class ReflectionCache: Sendable {
    static let ttl = TimeAmount.seconds(30)

    private struct State {
        var generation = 0
        /// nil services: the cluster was asked and could not answer (it is
        /// skipped, and not asked again, until the entry expires).
        var services: [String: (services: [String]?, until: NIODeadline)] = [:]
        var clusterBySymbol: [String: String] = [:]
        var clusterByFile: [String: String] = [:]
    }

    private let state = NIOLockedValueBox(State())

    private func withState<R>(_ generation: Int, _ body: (inout State) -> R) -> R {
        state.withLockedValue { s in
            if s.generation != generation { s = State(generation: generation) }
            return body(&s)
        }
    }

    /// `.some(nil)`: recently failed; nil: unknown or expired.
    func services(of cluster: String, generation: Int) -> [String]?? {
        withState(generation) { s in
            guard let entry = s.services[cluster], entry.until > .now() else { return nil }
            return .some(entry.services)
        }
    }

    func store(services: [String]?, of cluster: String, generation: Int) {
        withState(generation) { $0.services[cluster] = (services, .now() + Self.ttl) }
    }

    func cluster(symbol: String, generation: Int) -> String? {
        withState(generation) { $0.clusterBySymbol[symbol] }
    }

    func cluster(file: String, generation: Int) -> String? {
        withState(generation) { $0.clusterByFile[file] }
    }

    func store(cluster: String, symbol: String?, files: [String], generation: Int) {
        withState(generation) { s in
            if let symbol { s.clusterBySymbol[symbol] = cluster }
            for file in files { s.clusterByFile[file] = cluster }
        }
    }
}
