import FilterABI
import MeshgatePosix
import PluginKit

/// OpenTelemetry tracing of every RPC through the route. Config:
/// `collector` (OTLP/HTTP URL, e.g. http://127.0.0.1:4318/v1/traces; none:
/// trace context is still propagated and logged, nothing is exported),
/// `sampling_ratio` (0..1, default 1; an incoming `traceparent` decides for
/// its trace), `trust_client_sampling` (default true, as OpenTelemetry's
/// parent-based sampler and Envoy do; false: the client's trace is
/// continued but `sampling_ratio` decides whether it is sampled, so a
/// client at the edge can neither have every call of its own traced and
/// exported, nor keep its calls out of traces), `service_name` (default
/// "meshgate"), `queue_size` (default
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
    let trustClientSampling: Bool

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        samplingRatio = try config.double("sampling_ratio", default: 1, in: 0...1)
        trustClientSampling = try config.bool("trust_client_sampling", default: true)
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

/// One per event loop: its id generator and its spare call states need no
/// lock (the host calls an instance's hooks on its loop only).
final class TracingInstance {
    let config: TracingConfig
    var ids = IDGenerator()
    /// States of ended calls, for new calls: no allocation per call once
    /// warm. Bounded by the loop's peak of calls in flight (and 1,024).
    private var spareCalls: [TracingCall] = []

    init(config: TracingConfig) { self.config = config }

    /// The gateway's own sampling decision (`sampling_ratio`).
    func sample() -> Bool {
        config.samplingRatio >= 1 || ids.unit() < config.samplingRatio
    }

    func makeCall(traceID: TraceID, parentID: UInt64, serverSpanID: UInt64, sampled: Bool) -> TracingCall {
        guard let call = spareCalls.popLast() else {
            return TracingCall(traceID: traceID, parentID: parentID, serverSpanID: serverSpanID, sampled: sampled)
        }
        call.reset(traceID: traceID, parentID: parentID, serverSpanID: serverSpanID, sampled: sampled)
        return call
    }

    func recycle(_ call: TracingCall) {
        guard spareCalls.count < 1024 else { return }
        call.traceState = ""
        call.path = ""
        call.attempts.removeAll(keepingCapacity: true)
        spareCalls.append(call)
    }
}

final class TracingCall {
    private(set) var traceID: TraceID
    /// The client's span, 0 when this trace starts here.
    private(set) var parentID: UInt64
    private(set) var serverSpanID: UInt64
    private(set) var sampled: Bool
    private(set) var start = Clock.unixNanos()
    /// Read from the host only for sampled calls (span data).
    var traceState = ""
    var path = ""
    /// The span id, start and endpoint of each attempt (sampled calls only).
    var attempts: [AttemptSpan] = []

    struct AttemptSpan {
        var number: UInt32
        var spanID: UInt64
        var start: UInt64
        var address: String
    }

    init(traceID: TraceID, parentID: UInt64, serverSpanID: UInt64, sampled: Bool) {
        self.traceID = traceID
        self.parentID = parentID
        self.serverSpanID = serverSpanID
        self.sampled = sampled
    }

    /// A spare made new for another call (see TracingInstance.recycle).
    func reset(traceID: TraceID, parentID: UInt64, serverSpanID: UInt64, sampled: Bool) {
        self.traceID = traceID
        self.parentID = parentID
        self.serverSpanID = serverSpanID
        self.sampled = sampled
        start = Clock.unixNanos()
    }

    var flags: UInt8 { sampled ? 1 : 0 }
}

enum Clock {
    static func unixNanos() -> UInt64 { UInt64(Posix.wallClockNanos()) }
}

enum TracingPlugin {
    static let keys: Set<String> = ["collector", "sampling_ratio", "trust_client_sampling", "service_name", "queue_size", "batch_size",
                                    "flush_interval", "export_timeout"]

    // 1.1: call_set_log_field.
    static let descriptor = PluginDescriptor(name: "tracing", version: "1.0.0", kinds: .filter, abiMinor: 1) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: keys, errorBuffer, errorSize) { config throws(PluginConfig.Invalid) in
                try TracingConfig(config)
            }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, _ in
            guard let config = PluginSupport.object(config, as: TracingConfig.self) else { return nil }
            return PluginSupport.retain(TracingInstance(config: config))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.callNew = { instance, call in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self), let host = PluginHost.table?.pointee else { return nil }
            let state: TracingCall
            if let incoming = withHeader(call, traceparentName, TraceParent.init) {
                let sampled = instance.config.trustClientSampling ? incoming.sampled : instance.sample()
                state = instance.makeCall(traceID: incoming.traceID, parentID: incoming.parentID, serverSpanID: instance.ids.spanID(),
                                          sampled: sampled)
                if state.sampled { state.traceState = withHeader(call, tracestateName) { String(decoding: $0, as: UTF8.self) } ?? "" }
            } else {
                state = instance.makeCall(traceID: instance.ids.traceID(), parentID: 0, serverSpanID: instance.ids.spanID(), sampled: instance.sample())
            }
            if state.sampled { state.path = PluginSupport.string(host.call_method(call)) }
            return PluginSupport.retain(state)
        }
        d.callDestroy = { instance, state in
            if let instance = PluginSupport.object(instance, as: TracingInstance.self),
               let call = PluginSupport.object(state, as: TracingCall.self) {
                instance.recycle(call)
            }
            PluginSupport.release(state)
        }
        d.onRequestHeaders = { _, state, call in
            guard let state = PluginSupport.object(state, as: TracingCall.self), hostSetsLogFields else { return MG_CONTINUE }
            // Hex written on the stack: the host drops the fields at once
            // when the access log is off, so this costs next to nothing then.
            withUnsafeTemporaryAllocation(byteCount: 32, alignment: 1) { hex in
                Hex.write(state.traceID.high, digits: 16, into: hex, at: 0)
                Hex.write(state.traceID.low, digits: 16, into: hex, at: 16)
                setLogField(call, traceIDKey, hex)
                Hex.write(state.serverSpanID, digits: 16, into: hex, at: 0)
                setLogField(call, spanIDKey, UnsafeMutableRawBufferPointer(rebasing: hex[0..<16]))
            }
            setLogField(call, sampledKey, state.sampled ? trueValue : falseValue)
            return MG_CONTINUE
        }
        d.onAttemptStart = { instance, state, _, attempt in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self),
                  let state = PluginSupport.object(state, as: TracingCall.self), let host = PluginHost.table?.pointee, let attempt else { return }
            let spanID = instance.ids.spanID()
            withUnsafeTemporaryAllocation(byteCount: TraceParent.length, alignment: 1) { value in
                TraceParent(traceID: state.traceID, parentID: spanID, flags: state.flags).write(into: value)
                _ = host.attempt_set_request_header(attempt, traceparentName, mg(UnsafeRawBufferPointer(value)))
            }
            // What a span needs is only gathered for sampled calls.
            guard state.sampled else { return }
            var address = mg_str(ptr: nil, len: 0)
            var id: UInt64 = 0
            let known = host.attempt_endpoint(attempt, &id, &address) == 1
            state.attempts.append(.init(number: host.attempt_number(attempt), spanID: spanID, start: Clock.unixNanos(),
                                        address: known ? PluginSupport.string(address) : ""))
        }
        d.onAttemptDone = { instance, state, _, result, _ in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self),
                  let state = PluginSupport.object(state, as: TracingCall.self), let result, state.sampled,
                  let exporter = instance.config.exporter,
                  let attempt = state.attempts.first(where: { $0.number == result.pointee.attempt }) else { return }
            exporter.enqueue(SpanRecord(
                kind: .client, traceID: state.traceID, spanID: attempt.spanID, parentID: state.serverSpanID, traceState: state.traceState,
                path: state.path, startUnixNanos: attempt.start, endUnixNanos: Clock.unixNanos(), grpcStatus: result.pointee.grpc_status,
                statusMessage: PluginSupport.string(result.pointee.grpc_message), attempts: result.pointee.attempt,
                peer: attempt.address, transportFailure: result.pointee.transport_failure != 0))
        }
        d.onCallDone = { instance, state, call, result in
            guard let instance = PluginSupport.object(instance, as: TracingInstance.self),
                  let state = PluginSupport.object(state, as: TracingCall.self), let result, state.sampled,
                  let exporter = instance.config.exporter else { return }
            exporter.enqueue(SpanRecord(
                kind: .server, traceID: state.traceID, spanID: state.serverSpanID, parentID: state.parentID, traceState: state.traceState,
                path: state.path, startUnixNanos: state.start, endUnixNanos: Clock.unixNanos(), grpcStatus: result.pointee.grpc_status,
                statusMessage: PluginSupport.string(result.pointee.grpc_message), attempts: result.pointee.attempts,
                peer: withHeader(call, authorityName) { String(decoding: $0, as: UTF8.self) } ?? "", transportFailure: false))
        }
    }

    // Names and values as literals: computed where used (a constant
    // address and length), no stored global to share between loops.
    static var traceparentName: mg_str { PluginSupport.str("traceparent") }
    static var tracestateName: mg_str { PluginSupport.str("tracestate") }
    static var authorityName: mg_str { PluginSupport.str(":authority") }
    static var traceIDKey: mg_str { PluginSupport.str("trace_id") }
    static var spanIDKey: mg_str { PluginSupport.str("span_id") }
    static var sampledKey: mg_str { PluginSupport.str("trace_sampled") }
    static var trueValue: mg_str { PluginSupport.str("true") }
    static var falseValue: mg_str { PluginSupport.str("false") }

    /// Whether the host offers call_set_log_field (ABI 1.1), decided once.
    static let hostSetsLogFields = PluginHost.offers(\mg_host.call_set_log_field)

    static func mg(_ bytes: UnsafeRawBufferPointer) -> mg_str {
        mg_str(ptr: bytes.baseAddress?.assumingMemoryBound(to: CChar.self), len: bytes.count)
    }

    /// `body` applied to the first value of request header `name` (the
    /// host copies it into storage that lives as long as the call).
    static func withHeader<T>(_ call: OpaquePointer?, _ name: mg_str, _ body: (UnsafeRawBufferPointer) -> T?) -> T? {
        guard let host = PluginHost.table?.pointee else { return nil }
        var value = mg_str(ptr: nil, len: 0)
        guard host.call_request_header(call, name, 0, &value) == 1 else { return nil }
        return body(UnsafeRawBufferPointer(start: value.ptr, count: value.ptr == nil ? 0 : value.len))
    }

    static func setLogField(_ call: OpaquePointer?, _ key: mg_str, _ value: UnsafeMutableRawBufferPointer) {
        setLogField(call, key, mg(UnsafeRawBufferPointer(value)))
    }

    /// call_set_log_field is ABI 1.1: used only when the host offers it.
    static func setLogField(_ call: OpaquePointer?, _ key: mg_str, _ value: mg_str) {
        guard hostSetsLogFields, let set = PluginHost.table?.pointee.call_set_log_field else { return }
        _ = set(call, key, value)
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    TracingPlugin.descriptor.entry(host)
}
