import FilterABI
import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// OpenTelemetry tracing of every RPC through the route. Config:
/// `collector` (OTLP/HTTP URL, e.g. http://127.0.0.1:4318/v1/traces; none:
/// trace context is still propagated and logged, nothing is exported),
/// `sampling_ratio` (0..1, default 1; an incoming `traceparent` decides for
/// its trace), `service_name` (default "meshgate"), `queue_size` (default
/// 2048 spans), `batch_size` (default 256), `flush_interval` (default 1s),
/// `export_timeout` (default 2s).
///
/// Each RPC gets a server span (the gateway's), a child of the client's
/// `traceparent` when one came; each upstream attempt gets a client span,
/// child of the server span, so retries and hedges are siblings. Every
/// attempt carries its own span in `traceparent`; `tracestate` passes
/// through. The trace and server span ids go into the access log
/// (`call_set_log_field`, ABI 1.1).
final class TracingConfig {
    let exporter: SpanExporter?
    let samplingRatio: Double

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        samplingRatio = try config.double("sampling_ratio", default: 1, in: 0...1)
        let serviceName = config.string("service_name") ?? "meshgate"
        let queue = try config.int("queue_size", default: 2048, in: 1...1_000_000)
        let batch = try config.int("batch_size", default: 256, in: 1...10_000)
        let flush = try config.durationMs("flush_interval", default: 1000, min: 10)
        let timeout = try config.durationMs("export_timeout", default: 2000, min: 10)
        if let text = config.string("collector") {
            guard let url = CollectorURL(text) else {
                throw .init("collector: expected http://HOST:PORT[/path] (OTLP/HTTP), got '\(text)'")
            }
            exporter = SpanExporter(endpoint: url, serviceName: serviceName, queueLimit: queue, batchSize: batch,
                                    flushIntervalMs: Int(flush), timeoutMs: Int(timeout))
        } else {
            exporter = nil
        }
    }

    deinit { exporter?.stop() }
}

/// One per event loop: its id generator needs no lock.
final class TracingInstance {
    let config: TracingConfig
    var ids = IDGenerator()

    init(config: TracingConfig) { self.config = config }
}

final class TracingCall {
    var traceID: [UInt8]
    var parentID: [UInt8]
    var serverSpanID: [UInt8]
    var traceState = ""
    var sampled: Bool
    let start = Clock.unixNanos()
    /// Read from the host only for sampled calls (span names).
    var method = ""
    /// By attempt number: the attempt's span id, start and endpoint.
    var attempts: [(number: UInt32, spanID: [UInt8], start: UInt64, address: String)] = []

    init(traceID: [UInt8], parentID: [UInt8], serverSpanID: [UInt8], sampled: Bool) {
        self.traceID = traceID
        self.parentID = parentID
        self.serverSpanID = serverSpanID
        self.sampled = sampled
    }

    var flags: UInt8 { sampled ? 1 : 0 }

    /// "/pkg.Service/Method" -> ("pkg.Service", "Method").
    var serviceAndMethod: (String, String) {
        let parts = method.split(separator: "/")
        return parts.count == 2 ? (String(parts[0]), String(parts[1])) : (method, "")
    }
}

enum Clock {
    static func unixNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

enum TracingPlugin {
    static let keys: Set<String> = ["collector", "sampling_ratio", "service_name", "queue_size", "batch_size", "flush_interval", "export_timeout"]

    nonisolated(unsafe) static let descriptor: UnsafePointer<mg_plugin> = {
        var d = PluginSupport.descriptor(name: "tracing", version: "1.0.0", kinds: Int(MG_KIND_FILTER))
        d.abi_minor = 1  // call_set_log_field
        d.config_new = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: keys, errorBuffer, errorSize) { config throws(PluginConfig.Invalid) in
                try TracingConfig(config)
            }
        }
        d.config_destroy = { PluginSupport.release($0) }
        d.instance_new = { config, _, _ in
            guard let config = PluginSupport.object(config, as: TracingConfig.self) else { return nil }
            return PluginSupport.retain(TracingInstance(config: config))
        }
        d.instance_destroy = { PluginSupport.release($0) }
        d.call_new = { instance, call in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self), let host = PluginHost.table?.pointee else { return nil }
            let incoming = header(call, "traceparent").flatMap(TraceParent.init)
            let state: TracingCall
            if let incoming {
                state = TracingCall(traceID: incoming.traceID, parentID: incoming.parentID, serverSpanID: instance.ids.bytes(8),
                                    sampled: incoming.sampled)
                state.traceState = header(call, "tracestate") ?? ""
            } else {
                let sampled = instance.config.samplingRatio >= 1 || instance.ids.unit() < instance.config.samplingRatio
                state = TracingCall(traceID: instance.ids.bytes(16), parentID: [], serverSpanID: instance.ids.bytes(8), sampled: sampled)
            }
            if state.sampled { state.method = PluginSupport.string(host.call_method(call)) }
            return PluginSupport.retain(state)
        }
        d.call_destroy = { _, state in PluginSupport.release(state) }
        d.on_request_headers = { _, state, call in
            guard let state = PluginSupport.object(state, as: TracingCall.self) else { return MG_CONTINUE }
            setLogField(call, "trace_id", Hex.encode(state.traceID))
            setLogField(call, "span_id", Hex.encode(state.serverSpanID))
            setLogField(call, "trace_sampled", state.sampled ? "true" : "false")
            return MG_CONTINUE
        }
        d.on_attempt_start = { instance, state, _, attempt in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self),
                  let state = PluginSupport.object(state, as: TracingCall.self), let host = PluginHost.table?.pointee, let attempt else { return }
            let spanID = instance.ids.bytes(8)
            var value = TraceParent(traceID: state.traceID, parentID: spanID, flags: state.flags).header
            value.withUTF8 { v in _ = host.attempt_set_request_header(attempt, traceparentName, mg(v)) }
            // What a span needs is only gathered for sampled calls.
            guard state.sampled else { return }
            var address = mg_str(ptr: nil, len: 0)
            var id: UInt64 = 0
            let known = host.attempt_endpoint(attempt, &id, &address) == 1
            state.attempts.append((host.attempt_number(attempt), spanID, Clock.unixNanos(), known ? PluginSupport.string(address) : ""))
        }
        d.on_attempt_done = { instance, state, _, result, _ in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self),
                  let state = PluginSupport.object(state, as: TracingCall.self), let result, state.sampled,
                  let exporter = instance.config.exporter,
                  let attempt = state.attempts.first(where: { $0.number == result.pointee.attempt }) else { return }
            let (service, method) = state.serviceAndMethod
            var attributes: [(String, SpanRecord.Value)] = [
                ("rpc.system", .string("grpc")), ("rpc.service", .string(service)), ("rpc.method", .string(method)),
                ("rpc.grpc.status_code", .int(Int64(result.pointee.grpc_status))),
                ("meshgate.attempt", .int(Int64(result.pointee.attempt))),
            ]
            if let (host, port) = splitAddress(attempt.address) {
                attributes += [("server.address", .string(host)), ("server.port", .int(Int64(port))), ("network.peer.address", .string(host))]
            }
            if result.pointee.transport_failure != 0 { attributes.append(("meshgate.transport_failure", .int(1))) }
            exporter.enqueue(SpanRecord(
                traceID: state.traceID, spanID: attempt.spanID, parentID: state.serverSpanID, traceState: state.traceState,
                name: String(state.method.dropFirst()), kind: .client, startUnixNanos: attempt.start, endUnixNanos: Clock.unixNanos(),
                attributes: attributes, grpcStatus: result.pointee.grpc_status, statusMessage: PluginSupport.string(result.pointee.grpc_message)))
        }
        d.on_call_done = { instance, state, call, result in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self),
                  let state = PluginSupport.object(state, as: TracingCall.self), let result, state.sampled,
                  let exporter = instance.config.exporter else { return }
            let (service, method) = state.serviceAndMethod
            var attributes: [(String, SpanRecord.Value)] = [
                ("rpc.system", .string("grpc")), ("rpc.service", .string(service)), ("rpc.method", .string(method)),
                ("rpc.grpc.status_code", .int(Int64(result.pointee.grpc_status))),
                ("meshgate.attempts", .int(Int64(result.pointee.attempts))),
            ]
            if let authority = header(call, ":authority"), let (host, port) = splitAddress(authority) {
                attributes += [("server.address", .string(host)), ("server.port", .int(Int64(port)))]
            }
            exporter.enqueue(SpanRecord(
                traceID: state.traceID, spanID: state.serverSpanID, parentID: state.parentID, traceState: state.traceState,
                name: String(state.method.dropFirst()), kind: .server, startUnixNanos: state.start, endUnixNanos: Clock.unixNanos(),
                attributes: attributes, grpcStatus: result.pointee.grpc_status, statusMessage: PluginSupport.string(result.pointee.grpc_message)))
        }
        return PluginSupport.publish(d)
    }()

    /// Points at static storage and is never written: safe to share.
    nonisolated(unsafe) static let traceparentName = mg_str(ptr: PluginSupport.cString("traceparent"), len: 11)

    /// Whether the host offers call_set_log_field (ABI 1.1), decided once.
    static let hostSetsLogFields = PluginHost.offers(\mg_host.call_set_log_field)

    static func mg(_ bytes: UnsafeBufferPointer<UInt8>) -> mg_str {
        mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count)
    }

    static func header(_ call: OpaquePointer?, _ name: String) -> String? {
        guard let host = PluginHost.table?.pointee else { return nil }
        var name = name
        var value = mg_str(ptr: nil, len: 0)
        let found = name.withUTF8 { host.call_request_header(call, mg($0), 0, &value) }
        return found == 1 ? PluginSupport.string(value) : nil
    }

    /// call_set_log_field is ABI 1.1: used only when the host offers it.
    static func setLogField(_ call: OpaquePointer?, _ key: String, _ value: String) {
        guard hostSetsLogFields, let set = PluginHost.table?.pointee.call_set_log_field else { return }
        var key = key
        var value = value
        key.withUTF8 { k in value.withUTF8 { v in _ = set(call, mg(k), mg(v)) } }
    }

    /// "host:port" or "[v6]:port".
    static func splitAddress(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (String(host), port)
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    PluginHost.accept(host) ? TracingPlugin.descriptor : nil
}
