import MeshgateHTTP2
import MeshgateConfig

/// A listener's routes, compiled for matching on the request path: first
/// match wins, found through a `RouteIndex` rather than a scan. Immutable and
/// shared by every event loop.
public final class RouteTable: Sendable {
    /// A class, not a struct: each call holds its route, and a struct copy
    /// would retain every reference inside the config (a dozen per call).
    public final class Route: Sendable {
        public let config: RouteConfig
        /// Index of the target cluster in `ServingConfig.clusters`.
        public let clusterIndex: Int
        /// Position in the listener's routes (the filter chain's index).
        public let index: Int
        public let servicePrefix: String?
        public let timeoutNanos: Int64?
        public let maxTimeoutNanos: Int64?

        public init(config: RouteConfig, clusterIndex: Int, index: Int, servicePrefix: String?,
             timeoutNanos: Int64?, maxTimeoutNanos: Int64?) {
            self.config = config
            self.clusterIndex = clusterIndex
            self.index = index
            self.servicePrefix = servicePrefix
            self.timeoutNanos = timeoutNanos
            self.maxTimeoutNanos = maxTimeoutNanos
        }

        /// The deadline to enforce, in nanoseconds from now, given the
        /// client's `grpc-timeout` (nil when it sent none). Nil: no deadline.
        public func effectiveTimeout(clientTimeout: Int64?) -> Int64? {
            var timeout = clientTimeout ?? timeoutNanos
            if let cap = maxTimeoutNanos {
                timeout = min(timeout ?? cap, cap)
            }
            return timeout
        }

        public func matches(path: String, headers: HTTP2HeaderList) -> Bool {
            let m = config.match
            if let prefix = servicePrefix, !path.hasPrefix(prefix) { return false }
            if let method = m.method, path != method { return false }
            if let prefix = m.pathPrefix, !path.hasPrefix(prefix) { return false }
            for header in m.headers {
                let value = headers[header.name]
                switch header.rule {
                case .exact(let expected): if value != expected { return false }
                case .present(let wanted): if (value != nil) != wanted { return false }
                }
            }
            return true
        }
    }

    public let routes: [Route]
    private let index: RouteIndex

    public init(_ routes: [RouteConfig], clusterIndex: [String: Int]) {
        self.routes = routes.enumerated().map { i, r in
            Route(config: r, clusterIndex: clusterIndex[r.cluster]!, index: i,
                  servicePrefix: r.match.service.map { "/\($0)/" },
                  timeoutNanos: r.timeout?.nanosecondsClamped,
                  maxTimeoutNanos: r.maxTimeout?.nanosecondsClamped)
        }
        self.index = RouteIndex(routes)
    }

    /// The first route matching the request, if any.
    public func match(path: String, headers: HTTP2HeaderList) -> Route? {
        index.first(path: path) { routes[$0].matches(path: path, headers: headers) }.map { routes[$0] }
    }
}
