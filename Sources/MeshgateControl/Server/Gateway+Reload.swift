import GatewayHost
import MeshgateConfig
import MeshgateSupport
import MeshgateRouting
import MeshgateUpstream
import MeshgatePluginHost

/// Reloads and discovery membership changes: each builds the parts of a new
/// generation on the control thread and hands them to `generations`, the
/// one owner of what new calls use.
extension Gateway {
    /// Reloads the config file: routes, filter chains, plugins (a replaced
    /// plugin file loads anew), clusters (endpoints that stay keep their
    /// connections and health) and runtime settings (drain_timeout, access
    /// log, metrics, global_buffer_limit_bytes). New calls use the new generation at once; calls in
    /// flight finish on theirs, whose plugin instances, configs and dropped
    /// endpoints' connections go after their last call. On any error the
    /// current generation keeps serving and the error is returned (and
    /// logged). Listeners and the admin address need a restart.
    /// Reloads run one at a time, on the control thread.
    @discardableResult
    public func reload() -> Result<String, GatewayError> {
        ControlThread.run { self.reloadOnControlThread() }
    }

    private func reloadOnControlThread() -> Result<String, GatewayError> {
        let current = generations.current
        let file = current.config.sourceFile
        let result = Result<String, GatewayError> { () throws(GatewayError) -> String in
            let fileConfig: GatewayConfig
            do {
                fileConfig = try ConfigLoader.load(file: file)
            } catch {
                throw GatewayError(.invalidConfig, "\(error)")
            }
            if let difference = Self.restartOnlyDifference(current.config, fileConfig) {
                throw GatewayError(.invalidConfig, "\(file): \(difference) changed; that needs a restart (the running config stays)")
            }
            let plugins: FilterChains
            do {
                plugins = try FilterChains.load(fileConfig, ejections: ejections, host: DataPathHostFunctions.table)
            } catch {
                let message = (error as? ConfigError).map { "\(fileConfig.located($0))" } ?? "\(error)"
                GatewayEvents.shared.record(.plugin, .error, "plugin refused; the running config stays", ["error": message])
                throw GatewayError(.invalidConfig, message)
            }
            let tls: TLSMaterial
            do {
                tls = try TLSMaterial.load(fileConfig, previous: current.serving.tls)
                // Sources whose spec stayed keep running and keep their endpoints.
                try discovery.configure(fileConfig)
            } catch {
                plugins.destroy()
                throw GatewayError(.invalidConfig, (error as? ConfigError).map { "\(fileConfig.located($0))" } ?? "\(error)")
            }
            let serving = ServingConfig(discovery.overlay(fileConfig), tls: tls)
            guard let installed = install(fileConfig: fileConfig, serving: serving, plugins: plugins, from: current) else {
                plugins.destroy()
                throw GatewayError(.invalidConfig, "the gateway is draining: the running config stays")
            }
            counters.pluginsLoaded(Self.pluginNames(plugins))
            Self.recordPluginLoads(plugins, previous: current.plugins)
            if bufferBudget.limit != fileConfig.runtime.globalBufferLimitBytes {
                Self.warnIfBufferLimitIsBelowOneWindow(fileConfig.runtime.globalBufferLimitBytes)
            }
            bufferBudget.limit = fileConfig.runtime.globalBufferLimitBytes
            let names = Set(plugins.handles.map { "\($0.image.name) \($0.image.version) (\($0.image.sha256.prefix(12)))" }).sorted()
            return "generation \(installed.number) loaded from \(file); plugins: \(names.joined(separator: ", "))"
        }
        counters.reload(succeeded: (try? result.get()) != nil)
        switch result {
        case .success(let message):
            GatewayEvents.shared.record(.reload, .info, "reloaded", ["generation": String(generations.current.number), "detail": message])
        case .failure(let error):
            GatewayEvents.shared.record(.reload, .error, "reload failed; the running config stays",
                                        ["generation": String(generations.current.number), "error": error.message])
        }
        return result
    }

    /// A discovery source changed a cluster's endpoints: a new generation
    /// with the same plugins and the new endpoints (kept endpoints keep
    /// their connections and health; dropped ones close after their calls).
    /// On the control thread.
    package func applyDiscoveredMembership() {
        let current = generations.current
        guard !generations.isShuttingDown else { return }
        let serving = ServingConfig(discovery.overlay(current.fileConfig), tls: current.serving.tls)
        guard GenerationStore.clusterSignature(serving.config) != current.clusterSignature else { return }
        if let installed = install(fileConfig: current.fileConfig, serving: serving, plugins: current.plugins, from: current) {
            let changed = serving.config.clusters.filter { cluster in
                current.serving.config.clusters.first { $0.name == cluster.name }.map { $0.endpoints.map(\.address) != cluster.endpoints.map(\.address) } ?? true
            }
            for cluster in changed {
                GatewayEvents.shared.record(.membership, .info, "cluster membership applied", [
                    "generation": String(installed.number), "cluster": cluster.name,
                    "endpoints": cluster.endpoints.map(\.address.description).joined(separator: " "),
                ])
            }
        }
    }

    /// Health and ejection state follow new cluster membership before any
    /// loop builds pools for it, so that a new endpoint of a health-checked
    /// cluster starts out of rotation until its first check passes; then
    /// the generation is installed.
    private func install(fileConfig: GatewayConfig, serving: ServingConfig, plugins: FilterChains,
                         from current: GenerationStore.Snapshot) -> GenerationStore.Snapshot? {
        var checker: HealthChecker?
        if GenerationStore.clusterSignature(serving.config) != current.clusterSignature {
            ejections.setMembership(serving.clusters)
            let epoch = health.reconfigure(serving)
            checker = HealthChecker(serving: serving, registry: health, eventLoop: healthLoop, epoch: epoch)
        } else {
            health.updateRoutes(serving)
        }
        return generations.install(fileConfig: fileConfig, serving: serving, plugins: plugins, checker: checker)
    }

    package static func pluginNames(_ plugins: FilterChains) -> [String] {
        Set(plugins.handles.map(\.image.name)).sorted()
    }

    /// A "plugin loaded" event per image the new chains use that the
    /// previous ones did not (a new plugin, or a replaced file).
    package static func recordPluginLoads(_ plugins: FilterChains, previous: FilterChains?) {
        let before = Set(previous?.handles.map(\.image.sha256) ?? [])
        var seen: Set<String> = []
        for handle in plugins.handles where !before.contains(handle.image.sha256) && seen.insert(handle.image.sha256).inserted {
            let image = handle.image
            GatewayEvents.shared.record(.plugin, .info, "plugin loaded", [
                "plugin": image.name, "version": image.version, "abi": "\(image.abiMajor).\(image.abiMinor)",
                "sha256": String(image.sha256.prefix(12)), "path": image.path,
            ])
        }
    }

    /// What a reload cannot apply yet, or nil.
    package static func restartOnlyDifference(_ old: GatewayConfig, _ new: GatewayConfig) -> String? {
        let listeners = { (c: GatewayConfig) in c.listeners.map { "\($0.name)@\($0.address)/\($0.maxConcurrentStreams)" } }
        if listeners(old) != listeners(new) { return "the listeners (names, addresses)" }
        if old.listeners.map(\.tls) != new.listeners.map(\.tls) {
            return "a listener's tls block (replacing the files it names needs no restart)"
        }
        if old.listeners.map(\.grpcWeb) != new.listeners.map(\.grpcWeb) {
            return "a listener's grpc_web (it decides how connections are accepted; its cors block needs no restart)"
        }
        // Each listener's ConnectionLimit is built once, at start.
        if old.listeners.map(\.maxConnections) != new.listeners.map(\.maxConnections) {
            return "a listener's max_connections"
        }
        if old.admin?.address != new.admin?.address { return "the admin address" }
        if old.admin?.readOnlyAddresses != new.admin?.readOnlyAddresses { return "admin.read_only_addresses" }
        if old.admin.map({ [$0.maxConnections, Int($0.idleTimeout.nanosecondsClamped), Int($0.requestTimeout.nanosecondsClamped)] })
            != new.admin.map({ [$0.maxConnections, Int($0.idleTimeout.nanosecondsClamped), Int($0.requestTimeout.nanosecondsClamped)] }) {
            return "admin.max_connections, idle_timeout or request_timeout"
        }
        // The admin server's Host allow-list is built once, at start (a set:
        // the same names in another order are no change).
        if old.admin.map({ Set($0.allowedHosts) }) != new.admin.map({ Set($0.allowedHosts) }) { return "admin.allowed_hosts" }
        if old.runtime.maxMetricSeries != new.runtime.maxMetricSeries || old.runtime.metricSeriesIdleTimeout != new.runtime.metricSeriesIdleTimeout {
            return "runtime.max_metric_series or metric_series_idle_timeout"
        }
        if old.runtime.eventLoops != new.runtime.eventLoops { return "runtime.event_loops" }
        return nil
    }
}
