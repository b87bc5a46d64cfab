import FilterABI

/// What a plugin offers: `mg_plugin.kinds` (the header's MG_KIND_* flags).
public struct PluginKinds: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let filter = PluginKinds(rawValue: UInt32(MG_KIND_FILTER))
    public static let balancer = PluginKinds(rawValue: UInt32(MG_KIND_BALANCER))
    public static let retry = PluginKinds(rawValue: UInt32(MG_KIND_RETRY))
    public static let hedge = PluginKinds(rawValue: UInt32(MG_KIND_HEDGE))
}

/// A plugin's descriptor (`mg_plugin`), built once and kept until the
/// process exits, as the ABI asks of the pointer the entry returns. A
/// plugin keeps it in a `static let` and returns it from its entry:
///
///     enum RoundRobinPlugin {
///         static let descriptor = PluginDescriptor(name: "round_robin", version: "1.0.0",
///                                                  kinds: .balancer, abiMinor: 0) { d in
///             d.configNew = { _, json, error, size in ... }
///             d.lbPick = { instance, _, request, list, chosen in ... }
///         }
///     }
///
///     @_cdecl("meshgate_plugin_v1")
///     public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
///         RoundRobinPlugin.descriptor.entry(host)
///     }
///
/// The builder fills what every descriptor repeats (`size`, `abi_major`,
/// `abi_minor`, `kinds`, `name`, `version`); the plugin sets only its
/// hooks, which stay `@convention(c)` functions: nothing is captured or
/// allocated per call.
///
/// `@unchecked Sendable`, the one place a plugin's descriptor is shared
/// across threads unchecked: the `mg_plugin` behind `pointer` is written
/// once, in `init`, before the value exists; after that it is never
/// written and never freed (static storage, as the ABI requires), and its
/// own fields point only at static strings and C functions. Every thread
/// (the host's control thread, which calls the entry, and the event
/// loops, which read the host's copy) only reads it.
public struct PluginDescriptor: @unchecked Sendable {
    /// The descriptor, or nil when the builder found it invalid (`problem`
    /// says why; the entry then refuses to load).
    public let pointer: UnsafePointer<mg_plugin>?
    /// Why the descriptor is invalid, for the host's log; nil when valid.
    public let problem: String?
    /// The lowest minor version of ABI v1 whose host this plugin can use.
    public let abiMinor: UInt32
    public let name: StaticString

    /// Builds the descriptor: `hooks` sets the plugin's hooks on a builder
    /// whose identity fields are already filled in (and cannot be changed).
    /// `abiMinor` is the minor version the plugin needs: the host functions
    /// it calls without checking `PluginHost.offers` come from it.
    public init(name: StaticString, version: StaticString, kinds: PluginKinds, abiMinor: UInt32,
                hooks: (inout Builder) -> Void) {
        var builder = Builder(name: name, version: version, kinds: kinds, abiMinor: abiMinor)
        hooks(&builder)
        self.init(builder)
    }

    /// The descriptor of a builder made by hand (tests, or hooks chosen at
    /// run time).
    public init(_ builder: Builder) {
        name = builder.name
        abiMinor = builder.abiMinor
        problem = builder.problem
        if problem == nil {
            let storage = UnsafeMutablePointer<mg_plugin>.allocate(capacity: 1)
            storage.initialize(to: builder.descriptor)
            pointer = UnsafePointer(storage)
        } else {
            pointer = nil
        }
    }

    /// The body of the plugin's exported `meshgate_plugin_v1`: keeps the
    /// host's table (`PluginHost.table`) and returns the descriptor when the
    /// host speaks ABI v1 and offers at least `abiMinor`; otherwise NULL,
    /// which the host reports as a refusal (a host older than the plugin
    /// has no fields of the later minor: reading them would read past its
    /// structs).
    public func entry(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
        guard PluginHost.accept(host), let host else { return nil }
        if let problem {
            PluginHost.log(Int32(MG_LOG_ERROR), name, "invalid descriptor: \(problem)")
            return nil
        }
        guard host.pointee.abi_minor >= abiMinor else {
            PluginHost.log(Int32(MG_LOG_ERROR), name,
                           "needs filter ABI \(MG_ABI_MAJOR).\(abiMinor); this host offers \(host.pointee.abi_major).\(host.pointee.abi_minor)")
            return nil
        }
        return pointer
    }
}

extension PluginDescriptor {
    /// The hooks of a descriptor being built. Each property is the
    /// `mg_plugin` field of the same name in the header (`configNew` is
    /// `config_new`, `lbPick` is `lb_pick`, ...) and has its C function
    /// type: a closure assigned to it cannot capture anything, so it costs
    /// nothing per call. A hook left nil is "not implemented" (the ABI's
    /// default behaviour).
    public struct Builder {
        public typealias ConfigNew = @convention(c) (OpaquePointer?, mg_str, UnsafeMutablePointer<CChar>?, Int) -> UnsafeMutableRawPointer?
        public typealias Destroy = @convention(c) (UnsafeMutableRawPointer?) -> Void
        public typealias InstanceNew = @convention(c) (UnsafeMutableRawPointer?, UInt32, mg_str) -> UnsafeMutableRawPointer?
        public typealias CallNew = @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?) -> UnsafeMutableRawPointer?
        public typealias CallDestroy = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void
        public typealias RequestHeaders = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, OpaquePointer?) -> mg_action
        public typealias AttemptHook = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, OpaquePointer?, OpaquePointer?) -> Void
        public typealias AttemptDone = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, OpaquePointer?,
                                                      UnsafePointer<mg_attempt_result>?, UnsafeMutablePointer<mg_retry_decision>?) -> Void
        public typealias CallDone = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, OpaquePointer?,
                                                   UnsafePointer<mg_call_result>?) -> Void
        public typealias LBUpdate = @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<mg_endpoint_list>?) -> Void
        public typealias LBPick = @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mg_pick_request>?,
                                                 UnsafePointer<mg_endpoint_list>?, UnsafeMutablePointer<UInt32>?) -> Int32

        public let name: StaticString
        public let version: StaticString
        public let kinds: PluginKinds
        public let abiMinor: UInt32

        /// Required: the host refuses a descriptor without it.
        public var configNew: ConfigNew?
        public var configDestroy: Destroy?
        public var instanceNew: InstanceNew?
        public var instanceDestroy: Destroy?
        public var callNew: CallNew?
        public var callDestroy: CallDestroy?
        public var onRequestHeaders: RequestHeaders?
        public var onAttemptStart: AttemptHook?
        public var onResponseHeaders: AttemptHook?
        public var onAttemptDone: AttemptDone?
        public var onCallDone: CallDone?
        /// `.balancer` only.
        public var lbUpdate: LBUpdate?
        /// Required of a `.balancer`, and only for one.
        public var lbPick: LBPick?

        public init(name: StaticString, version: StaticString, kinds: PluginKinds, abiMinor: UInt32) {
            self.name = name
            self.version = version
            self.kinds = kinds
            self.abiMinor = abiMinor
        }

        /// What the host would refuse, or what a host would silently
        /// ignore; nil when the descriptor is sound.
        public var problem: String? {
            if kinds.isEmpty { return "kinds is empty" }
            if !PluginKinds(rawValue: UInt32(MG_KIND_FILTER | MG_KIND_BALANCER | MG_KIND_RETRY | MG_KIND_HEDGE)).isSuperset(of: kinds) {
                return "kinds has bits this ABI does not define (\(kinds.rawValue))"
            }
            if abiMinor > UInt32(MG_ABI_MINOR) {
                return "abi_minor \(abiMinor) is newer than the header it was built against (\(MG_ABI_MAJOR).\(MG_ABI_MINOR))"
            }
            if name.utf8CodeUnitCount == 0 { return "the name is empty" }
            if configNew == nil { return "config_new is required" }
            if kinds.contains(.balancer) && lbPick == nil { return "a balancer needs lb_pick" }
            if !kinds.contains(.balancer) && (lbPick != nil || lbUpdate != nil) {
                return "lb_pick and lb_update are only called on a balancer (kinds lacks .balancer)"
            }
            return nil
        }

        /// The `mg_plugin` value: identity from the builder, then the hooks.
        public var descriptor: mg_plugin {
            var d = mg_plugin()
            d.size = UInt32(MemoryLayout<mg_plugin>.size)
            d.abi_major = UInt32(MG_ABI_MAJOR)
            d.abi_minor = abiMinor
            d.kinds = kinds.rawValue
            d.name = PluginSupport.cString(name)
            d.version = PluginSupport.cString(version)
            d.config_new = configNew
            d.config_destroy = configDestroy
            d.instance_new = instanceNew
            d.instance_destroy = instanceDestroy
            d.call_new = callNew
            d.call_destroy = callDestroy
            d.on_request_headers = onRequestHeaders
            d.on_attempt_start = onAttemptStart
            d.on_response_headers = onResponseHeaders
            d.on_attempt_done = onAttemptDone
            d.on_call_done = onCallDone
            d.lb_update = lbUpdate
            d.lb_pick = lbPick
            return d
        }
    }
}
