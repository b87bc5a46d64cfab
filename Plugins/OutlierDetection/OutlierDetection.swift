import FilterABI
import PluginKit
import Synchronization

/// Outlier detection as gRFC A50 (success-rate and failure-percentage
/// ejection, evaluated every `interval`), plus Envoy's consecutive-failures
/// mode (ejection as soon as an endpoint fails `consecutive_failures` times
/// in a row). An attempt fails when the transport failed or its status is in
/// `failure_status_codes` (default UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS); cancelled attempts (losing hedges) do not count.
///
/// Ejection goes through the host (endpoint_eject), which keeps it and ends
/// it by itself: it survives a hot swap of this plugin, and every balancer
/// skips the endpoint meanwhile. The n-th ejection of an endpoint lasts
/// min(base_ejection_time × n, max(base, max_ejection_time)); n decays by
/// one every interval the endpoint is not ejected. At most
/// `max_ejection_percent` of the endpoints seen are ejected at a time.
///
/// `@unchecked Sendable` only for `context`: the host's `mg_config_ctx *`,
/// an opaque handle the ABI lets any thread pass to endpoint_eject while
/// the config exists (the host synchronizes behind it). Everything else is
/// immutable, or behind `clusters`' Mutex.
final class OutlierConfig: @unchecked Sendable {
    struct SuccessRate { var stdevFactor: Double, enforcement: Int, minimumHosts: Int, requestVolume: Int }
    struct FailurePercentage { var threshold: Int, enforcement: Int, minimumHosts: Int, requestVolume: Int }

    let intervalMs: UInt32
    let baseEjectionMs: Double
    let maxEjectionMs: Double
    let maxEjectionPercent: Int
    let successRate: SuccessRate?
    let failurePercentage: FailurePercentage?
    let consecutiveFailures: Int
    let failureCodes: Set<Int32>
    let context: OpaquePointer?
    private let clusters = Mutex<[String: ClusterOutliers]>([:])

    init(_ config: PluginConfig, context: OpaquePointer?) throws(PluginConfig.Invalid) {
        self.context = context
        intervalMs = UInt32(try config.durationMs("interval", default: 10_000, min: 10))
        baseEjectionMs = try config.durationMs("base_ejection_time", default: 30_000, min: 1)
        maxEjectionMs = try config.durationMs("max_ejection_time", default: 300_000, min: 1)
        maxEjectionPercent = try config.int("max_ejection_percent", default: 10, in: 0...100)
        consecutiveFailures = try config.int("consecutive_failures", default: 0, in: 0...1_000_000)
        failureCodes = try config.statusCodes("failure_status_codes", default: [2, 4, 13, 14, 15])
        if let block = config.mapping("success_rate_ejection") {
            let c = try PluginConfig(object: block, allowedKeys: ["stdev_factor", "enforcement_percentage", "minimum_hosts", "request_volume"], path: "success_rate_ejection")
            successRate = SuccessRate(
                stdevFactor: try c.double("stdev_factor", default: 1900, in: 0...1_000_000) / 1000,
                enforcement: try c.int("enforcement_percentage", default: 100, in: 0...100),
                minimumHosts: try c.int("minimum_hosts", default: 5, in: 1...100_000),
                requestVolume: try c.int("request_volume", default: 100, in: 1...10_000_000))
        } else {
            successRate = nil
        }
        if let block = config.mapping("failure_percentage_ejection") {
            let c = try PluginConfig(object: block, allowedKeys: ["threshold", "enforcement_percentage", "minimum_hosts", "request_volume"], path: "failure_percentage_ejection")
            failurePercentage = FailurePercentage(
                threshold: try c.int("threshold", default: 85, in: 0...100),
                enforcement: try c.int("enforcement_percentage", default: 100, in: 0...100),
                minimumHosts: try c.int("minimum_hosts", default: 5, in: 1...100_000),
                requestVolume: try c.int("request_volume", default: 50, in: 1...10_000_000))
        } else {
            failurePercentage = nil
        }
        guard successRate != nil || failurePercentage != nil || consecutiveFailures > 0 else {
            throw .init("enable at least one of success_rate_ejection, failure_percentage_ejection or consecutive_failures")
        }
    }

    func outliers(for cluster: String) -> ClusterOutliers {
        clusters.withLock { table in
            if let existing = table[cluster] { return existing }
            let made = ClusterOutliers(name: cluster, config: self)
            table[cluster] = made
            return made
        }
    }

    /// Control thread, every interval.
    func sweep() {
        for cluster in clusters.withLock({ Array($0.values) }) { cluster.sweep() }
    }
}

/// One cluster's counters and ejection history. Attempts report from the
/// event loops under a short lock (no allocation once an endpoint is known).
final class ClusterOutliers: Sendable {
    struct Endpoint {
        var successes = 0
        var failures = 0
        var consecutive = 0
        var multiplier = 0
        var ejectedUntil: Double = 0
    }

    let name: String
    unowned let config: OutlierConfig
    private let state = Mutex<[UInt64: Endpoint]>([:])

    init(name: String, config: OutlierConfig) {
        self.name = name
        self.config = config
    }

    func record(endpoint id: UInt64, failed: Bool) {
        let ejectNow = state.withLock { table -> Bool in
            var e = table[id, default: Endpoint()]
            if failed {
                e.failures += 1
                e.consecutive += 1
            } else {
                e.successes += 1
                e.consecutive = 0
            }
            var eject = false
            if config.consecutiveFailures > 0, e.consecutive >= config.consecutiveFailures, e.ejectedUntil < now() {
                e.consecutive = 0
                table[id] = e
                eject = mayEject(table)
            } else {
                table[id] = e
            }
            return eject
        }
        if ejectNow { eject([id], reason: "\(config.consecutiveFailures) consecutive failures") }
    }

    /// Milliseconds on the monotonic clock (a wall-clock jump must not
    /// end or stretch an ejection).
    private func now() -> Double {
        let elapsed = ContinuousClock.now - Self.origin
        return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
    }

    private static let origin = ContinuousClock.now

    /// A50: eject only while fewer than max_ejection_percent are ejected.
    private func mayEject(_ table: [UInt64: Endpoint]) -> Bool {
        let t = now()
        let ejected = table.values.filter { $0.ejectedUntil > t }.count
        return table.count > 0 && ejected * 100 < config.maxEjectionPercent * table.count
    }

    private func eject(_ ids: [UInt64], reason: String) {
        for id in ids {
            let duration = state.withLock { table -> Double? in
                guard var e = table[id], mayEject(table) else { return nil }
                e.multiplier += 1
                let ms = min(config.baseEjectionMs * Double(e.multiplier), max(config.baseEjectionMs, config.maxEjectionMs))
                e.ejectedUntil = now() + ms
                table[id] = e
                return ms
            }
            guard let duration, let host = PluginHost.table?.pointee else { continue }
            var cluster = name
            let accepted = cluster.withUTF8 { bytes in
                host.endpoint_eject(config.context, mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                                    id, UInt32(duration))
            }
            PluginHost.log(Int32(MG_LOG_WARNING), "outlier_detection",
                           "cluster \(name): endpoint \(id) ejected for \(Int(duration)) ms (\(reason))\(accepted == 0 ? "" : "; the host did not know it")")
        }
    }

    /// Control thread: A50's interval algorithm.
    func sweep() {
        let t = now()
        let snapshot = state.withLock { table -> [(UInt64, Endpoint)] in
            let copy = Array(table)
            for (id, var e) in table {
                e.successes = 0
                e.failures = 0
                if e.ejectedUntil <= t && e.multiplier > 0 { e.multiplier -= 1 }
                table[id] = e
            }
            return copy
        }
        let live = snapshot.filter { $0.1.ejectedUntil <= t }
        var outliers: [UInt64] = []
        if let sr = config.successRate {
            let candidates = live.filter { $0.1.successes + $0.1.failures >= sr.requestVolume }
            if candidates.count >= sr.minimumHosts {
                let rates = candidates.map { Double($0.1.successes) / Double($0.1.successes + $0.1.failures) }
                let mean = rates.reduce(0, +) / Double(rates.count)
                let variance = rates.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rates.count)
                let threshold = mean - variance.squareRoot() * sr.stdevFactor
                for (i, candidate) in candidates.enumerated() where rates[i] < threshold && Int.random(in: 0..<100) < sr.enforcement {
                    outliers.append(candidate.0)
                }
            }
        }
        if let fp = config.failurePercentage {
            let candidates = live.filter { $0.1.successes + $0.1.failures >= fp.requestVolume }
            if candidates.count >= fp.minimumHosts {
                for candidate in candidates {
                    let total = candidate.1.successes + candidate.1.failures
                    if candidate.1.failures * 100 > fp.threshold * total && Int.random(in: 0..<100) < fp.enforcement,
                       !outliers.contains(candidate.0) {
                        outliers.append(candidate.0)
                    }
                }
            }
        }
        if !outliers.isEmpty { eject(outliers, reason: "outlier in the last interval") }
    }
}

final class OutlierInstance {
    let config: OutlierConfig
    let cluster: ClusterOutliers
    init(config: OutlierConfig, cluster: ClusterOutliers) {
        self.config = config
        self.cluster = cluster
    }
}

enum OutlierDetectionPlugin {
    static let descriptor = PluginDescriptor(name: "outlier_detection", version: "1.0.0", kinds: .filter, abiMinor: 0) { d in
        d.configNew = { context, json, errorBuffer, errorSize in
            do throws(PluginConfig.Invalid) {
                let parsed = try PluginConfig(json: json, allowedKeys: [
                    "interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "consecutive_failures",
                    "failure_status_codes", "success_rate_ejection", "failure_percentage_ejection",
                ])
                let config = try OutlierConfig(parsed, context: context)
                let pointer = PluginSupport.retain(config)
                // The host cancels the config's timers before config_destroy:
                // the id need not be kept.
                _ = PluginHost.table?.pointee.timer_start(context, config.intervalMs, 1, { user in
                    PluginSupport.object(user, as: OutlierConfig.self)?.sweep()
                }, pointer)
                return pointer
            } catch {
                PluginSupport.writeError(error.message, errorBuffer, errorSize)
                return nil
            }
        }
        // The host cancels the config's timers before this.
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, cluster in
            guard let config = PluginSupport.object(config, as: OutlierConfig.self) else { return nil }
            return PluginSupport.retain(OutlierInstance(config: config, cluster: config.outliers(for: PluginSupport.string(cluster))))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.onAttemptDone = { instance, _, _, result, _ in
            guard let result, let outlier = PluginSupport.object(instance, as: OutlierInstance.self) else { return }
            let r = result.pointee
            guard r.grpc_status != Int32(MG_STATUS_CANCELLED) || r.transport_failure != 0, r.endpoint_id != 0 else { return }
            let failed = r.transport_failure != 0 || outlier.config.failureCodes.contains(r.grpc_status)
            outlier.cluster.record(endpoint: r.endpoint_id, failed: failed)
        }
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    OutlierDetectionPlugin.descriptor.entry(host)
}
