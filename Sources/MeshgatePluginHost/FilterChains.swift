import FilterABI
import MeshgatePosix
import MeshgateYAML
import MeshgateConfig
import MeshgateSupport
import MeshgateUpstream

/// The filter chains of one config generation: every route's filters and
/// its balancer, with their plugin configs created (and so validated by the
/// plugins) at load.
public final class FilterChains: Sendable {
    /// A class: each call holds its chain, and a struct copy would retain
    /// each array and handle in it.
    public final class RouteChain: Sendable {
        public let filters: [FilterHandle]
        public let balancer: FilterHandle
        /// The retry or hedge filter, which decides about further attempts.
        public let scheduler: FilterHandle?
        /// Some filter keeps per-call state (call_new).
        public let needsCallState: Bool
        /// `filters` as plain values, in the same order, for the hooks.
        public let links: [FilterLink]
        public let balancerLink: FilterLink
        /// The scheduler's position in `filters`.
        public let schedulerIndex: Int?
        /// Which hooks some filter of the chain has: the others are skipped
        /// without walking the chain.
        public let hasRequestHeaderHook: Bool
        public let hasAttemptStartHook: Bool
        public let hasResponseHeaderHook: Bool
        public let hasAttemptDoneHook: Bool
        public let hasCallDoneHook: Bool

        public init(filters: [FilterHandle], balancer: FilterHandle) {
            self.filters = filters
            self.balancer = balancer
            self.schedulerIndex = filters.firstIndex { $0.image.schedulesAttempts }
            self.scheduler = schedulerIndex.map { filters[$0] }
            self.needsCallState = filters.contains { $0.hooks.call_new != nil }
            let links = filters.map(\.link)
            self.links = links
            self.balancerLink = balancer.link
            hasRequestHeaderHook = links.contains { $0.hooks.on_request_headers != nil }
            hasAttemptStartHook = links.contains { $0.hooks.on_attempt_start != nil }
            hasResponseHeaderHook = links.contains { $0.hooks.on_response_headers != nil }
            hasAttemptDoneHook = links.contains { $0.hooks.on_attempt_done != nil }
            hasCallDoneHook = links.contains { $0.hooks.on_call_done != nil || $0.hooks.call_destroy != nil }
        }
    }

    /// Chains by listener, then by route, in config order.
    public let chains: [[RouteChain]]
    /// Every distinct handle, indexed by `FilterHandle.index`.
    public let handles: [FilterHandle]

    /// Built-in plugins: name -> library file in the plugin directory.
    public static let builtIns: [String: String] = [
        "round_robin": "libRoundRobin.so",
        "least_conn": "libLeastConn.so",
        "random": "libRandom.so",
        "consistent_hash": "libConsistentHash.so",
        "retry": "libRetry.so",
        "hedge": "libHedge.so",
        "circuit_breaker": "libCircuitBreaker.so",
        "rate_limit": "libRateLimit.so",
        "mirror": "libMirror.so",
        "outlier_detection": "libOutlierDetection.so",
        "tracing": "libTracing.so",
    ]
    public static let defaultBalancer = "round_robin"

    private init(chains: [[RouteChain]], handles: [FilterHandle]) {
        self.chains = chains
        self.handles = handles
    }

    /// Loads every plugin the config uses and creates every filter config.
    /// Errors name the config file, line and field, and the plugin's path,
    /// ABI version or own message.
    /// `host` is the table every plugin gets (`DataPathHostFunctions.table`).
    public static func load(_ config: GatewayConfig, ejections: EjectionRegistry = EjectionRegistry(), host: PluginHostTable) throws(ConfigError) -> FilterChains {
        // config_new runs on the ABI's control thread.
        let result = ControlThread.run { Result { () throws(ConfigError) -> FilterChains in try loadOnControlThread(config, ejections: ejections, host: host) } }
        return try result.get()
    }

    private static func loadOnControlThread(_ config: GatewayConfig, ejections: EjectionRegistry, host: PluginHostTable) throws(ConfigError) -> FilterChains {
        let configDirectory = ConfigPaths.directory(of: config.sourceFile)
        // `plugin_dir`, else MESHGATE_PLUGIN_DIR (the container image sets
        // it), else the executable's folder (where `swift build` puts them).
        let pluginDirectory = config.pluginDirectory.map { ConfigPaths.resolve($0, against: configDirectory) }
            ?? Posix.environment("MESHGATE_PLUGIN_DIR") ?? executableDirectory()
        let cacheDirectory = "/tmp/meshgate-plugins-\(Posix.userID)"
        var declared: [String: PluginDeclaration] = [:]
        for d in config.plugins { declared[d.name] = d }

        var handles: [FilterHandle] = []
        var images: [String: PluginImage] = [:]

        func image(_ name: String, mark: YAMLMark?, field: String) throws(ConfigError) -> PluginImage {
            if let loaded = images[name] { return loaded }
            let path: String
            if let d = declared[name] {
                path = d.path.contains("/") ? ConfigPaths.resolve(d.path, against: configDirectory) : "\(pluginDirectory)/\(d.path)"
            } else if let file = builtIns[name] {
                path = "\(pluginDirectory)/\(file)"
            } else {
                let names = (Array(declared.keys) + Array(builtIns.keys)).sorted().joined(separator: ", ")
                throw ConfigError(file: config.sourceFile, mark: mark, field: field,
                                  message: "plugin '\(name)' is not declared (declare it under `plugins:`; known: \(names))")
            }
            do {
                let loaded = try PluginImage.load(path: path, cacheDirectory: cacheDirectory, host: host)
                images[name] = loaded
                return loaded
            } catch {
                throw ConfigError(file: config.sourceFile, mark: mark, field: field, message: "\(error)")
            }
        }

        func create(_ image: PluginImage, json: String, mark: YAMLMark?, field: String) throws(ConfigError) -> FilterHandle {
            let context = PluginConfigContext(ejections: ejections)
            var error = [CChar](repeating: 0, count: 1024)
            var json = json
            let created: UnsafeMutableRawPointer? = json.withUTF8 { bytes in
                let text = mg_str(ptr: UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self), len: bytes.count)
                return image.hooks.config_new!(context.opaque, text, &error, error.count)
            }
            guard let created else {
                let reason = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                throw ConfigError(file: config.sourceFile, mark: mark, field: field,
                                  message: "plugin '\(image.name)' (\(image.path)) rejected its config: \(reason.isEmpty ? "no reason given" : reason)")
            }
            let handle = FilterHandle(image: image, index: handles.count, config: created, context: context, field: field)
            handles.append(handle)
            return handle
        }

        do throws(ConfigError) {
            var defaultBalancer: FilterHandle?
            var chains: [[RouteChain]] = []
            for (l, listener) in config.listeners.enumerated() {
                var routeChains: [RouteChain] = []
                for (r, route) in listener.routes.enumerated() {
                    var filters: [FilterHandle] = []
                    var balancer: FilterHandle?
                    var scheduler: FilterHandle?
                    for filter in route.filters {
                        let pluginField = "\(filter.field).plugin"
                        let loaded = try image(filter.plugin, mark: filter.mark, field: pluginField)
                        let handle = try create(loaded, json: filter.config?.jsonText ?? "{}", mark: filter.mark, field: "\(filter.field).config")
                        if loaded.isBalancer {
                            if let first = balancer {
                                throw ConfigError(file: config.sourceFile, mark: filter.mark, field: pluginField,
                                                  message: "a chain holds one balancer: '\(filter.plugin)' and '\(first.image.name)' are both balancers")
                            }
                            balancer = handle
                        }
                        if loaded.schedulesAttempts {
                            if let first = scheduler {
                                throw ConfigError(file: config.sourceFile, mark: filter.mark, field: pluginField,
                                                  message: "'\(filter.plugin)' and '\(first.image.name)' both schedule attempts (retry and hedging cannot share a chain)")
                            }
                            scheduler = handle
                        }
                        filters.append(handle)
                    }
                    if balancer == nil {
                        if defaultBalancer == nil {
                            let field = "listeners[\(l)].routes[\(r)].filters"
                            let loaded = try image(Self.defaultBalancer, mark: route.mark, field: field)
                            defaultBalancer = try create(loaded, json: "{}", mark: route.mark, field: field)
                        }
                        balancer = defaultBalancer
                    }
                    // A balancer's filter hooks run too when it is also a filter.
                    routeChains.append(RouteChain(filters: filters.filter { !$0.image.isBalancer || $0.image.isFilter }, balancer: balancer!))
                }
                chains.append(routeChains)
            }
            return FilterChains(chains: chains, handles: handles)
        } catch {
            for handle in handles { handle.destroy() }
            throw error
        }
    }

    /// Destroys every config (after `validate`, or when a generation retires).
    public func destroy() {
        for handle in handles { handle.destroy() }
    }

    public static func executableDirectory() -> String {
        (try? Posix.executablePath()).map(ConfigPaths.directory(of:)) ?? "."
    }
}
