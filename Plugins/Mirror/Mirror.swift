import FilterABI
import PluginKit
import Synchronization

/// `mirror`: sends a share of a route's calls also to a shadow cluster
/// (ABI 1.3 call_start_shadow), whose answers are read and dropped. The
/// host keeps the shadow from affecting the call (bounded buffering, its
/// own timeout); this plugin decides which calls and counts the outcomes.
///
/// Config: `cluster` (the shadow cluster, required), `percent` (0-100,
/// default 100), `header` (mirror only calls that carry this request
/// header; with `header_value`, only calls whose value equals it),
/// `timeout` (default 10s: the shadow is abandoned then) and
/// `max_buffer_bytes` (default 65536: request bytes the shadow may hold
/// before it is abandoned).
final class MirrorConfig: Sendable {
    let cluster: String
    /// Calls mirrored per 2^32: a percent as a threshold for a 32-bit draw.
    let threshold: UInt64
    let header: String?
    let headerValue: String?
    let timeoutMs: UInt32
    let maxBufferBytes: UInt32
    let started: UInt64
    let unstarted: UInt64
    let succeeded: UInt64
    let failed: UInt64
    let abandoned: UInt64

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        guard let cluster = config.string("cluster"), !cluster.isEmpty else {
            throw .init("cluster (the shadow cluster) is required")
        }
        self.cluster = cluster
        let percent = try config.double("percent", default: 100, in: 0...100)
        threshold = UInt64((percent / 100 * 4_294_967_296).rounded())
        header = config.string("header")?.lowercased()
        headerValue = config.string("header_value")
        if headerValue != nil && header == nil { throw .init("header_value needs header") }
        if let header, header.isEmpty || header.hasPrefix(":") { throw .init("header must name a request header, not a pseudo-header") }
        timeoutMs = UInt32(try config.durationMs("timeout", default: 10_000, min: 1).rounded(.up).clamped(to: 1...86_400_000))
        maxBufferBytes = UInt32(try config.int("max_buffer_bytes", default: 65_536, in: 1024...(64 << 20)))
        let label = "cluster=\"\(PluginHost.labelValue(cluster))\""
        let help = "Calls the mirror filter copied to a shadow cluster, by shadow cluster and outcome."
        started = PluginHost.declareCounter("meshgate_mirror_requests_total", help: help, labels: label + ",result=\"started\"")
        unstarted = PluginHost.declareCounter("meshgate_mirror_requests_total", help: help, labels: label + ",result=\"not_started\"")
        succeeded = PluginHost.declareCounter("meshgate_mirror_requests_total", help: help, labels: label + ",result=\"ok\"")
        failed = PluginHost.declareCounter("meshgate_mirror_requests_total", help: help, labels: label + ",result=\"error\"")
        abandoned = PluginHost.declareCounter("meshgate_mirror_requests_total", help: help, labels: label + ",result=\"abandoned\"")
    }
}

extension Double {
    fileprivate func clamped(to range: ClosedRange<Double>) -> Double { Swift.min(Swift.max(self, range.lowerBound), range.upperBound) }
}

/// One loop's mirror: its own random stream (no shared state per call).
final class MirrorInstance {
    let config: MirrorConfig
    private var random: UInt64
    private var warnedUnstarted = false

    init(config: MirrorConfig, loopIndex: UInt32) {
        self.config = config
        random = UInt64.random(in: 1...UInt64.max) ^ UInt64(loopIndex)
    }

    /// SplitMix64: one draw per call.
    func draw() -> UInt64 {
        random &+= 0x9e37_79b9_7f4a_7c15
        var z = random
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return (z ^ (z >> 31)) & 0xffff_ffff
    }

    func warnUnstartedOnce() {
        guard !warnedUnstarted else { return }
        warnedUnstarted = true
        PluginHost.log(Int32(MG_LOG_WARNING), "mirror",
                       "cannot mirror to cluster '\(config.cluster)': it is not configured or has no usable endpoint (counted as not_started)")
    }
}

enum MirrorPlugin {
    static func wanted(_ config: MirrorConfig, _ call: OpaquePointer?) -> Bool {
        guard let header = config.header else { return true }
        guard let value = PluginHost.requestHeader(call, header) else { return false }
        guard let expected = config.headerValue else { return true }
        return value.elementsEqual(expected.utf8)
    }

    /// Runs on the call's loop when a shadow ended; `user` is the instance
    /// (the host keeps it alive until then).
    static let shadowDone: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<mg_shadow_result>?) -> Void = { user, result in
        guard let mirror = PluginSupport.object(user, as: MirrorInstance.self), let result else { return }
        let config = mirror.config
        if result.pointee.abandoned != 0 {
            PluginHost.add(config.abandoned)
        } else if result.pointee.grpc_status == Int32(MG_STATUS_OK) {
            PluginHost.add(config.succeeded)
        } else {
            PluginHost.add(config.failed)
        }
    }

    // 1.3: call_start_shadow.
    static let descriptor = PluginDescriptor(name: "mirror", version: "1.0.0", kinds: .filter, abiMinor: 3) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: ["cluster", "percent", "header", "header_value", "timeout", "max_buffer_bytes"],
                                     errorBuffer, errorSize) { config throws(PluginConfig.Invalid) in try MirrorConfig(config) }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, loop, _ in
            guard let config = PluginSupport.object(config, as: MirrorConfig.self) else { return nil }
            return PluginSupport.retain(MirrorInstance(config: config, loopIndex: loop))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.onRequestHeaders = { instance, _, call in
            guard let mirror = PluginSupport.object(instance, as: MirrorInstance.self),
                  let start = PluginHost.table?.pointee.call_start_shadow else { return MG_CONTINUE }
            let config = mirror.config
            guard config.threshold > 0, mirror.draw() < config.threshold, wanted(config, call) else { return MG_CONTINUE }
            var cluster = config.cluster
            let started = cluster.withUTF8 { bytes in
                start(call, mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                      config.timeoutMs, config.maxBufferBytes, shadowDone, instance)
            }
            if started == 0 {
                PluginHost.add(config.started)
            } else {
                PluginHost.add(config.unstarted)
                mirror.warnUnstartedOnce()
            }
            return MG_CONTINUE
        }
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    MirrorPlugin.descriptor.entry(host)
}
