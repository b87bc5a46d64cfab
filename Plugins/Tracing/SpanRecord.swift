import ProtoWire

/// A finished span, as exported (OTLP `Span`).
struct SpanRecord {
    enum Kind: UInt64 { case server = 2, client = 3 }

    enum Value {
        case string(String)
        case int(Int64)
    }

    var traceID: [UInt8]
    var spanID: [UInt8]
    var parentID: [UInt8]
    var traceState: String
    var name: String
    var kind: Kind
    var startUnixNanos: UInt64
    var endUnixNanos: UInt64
    var attributes: [(String, Value)]
    /// gRPC status code of the call or attempt (OTel: ERROR for any non-OK
    /// status at a client span; at a server span only for the codes the
    /// semantic conventions list as server errors).
    var grpcStatus: Int32
    var statusMessage: String
}

/// OTLP/protobuf encoding (opentelemetry-proto, collector/trace/v1).
enum OTLPEncoding {
    static func exportRequest(_ spans: [SpanRecord], serviceName: String) -> [UInt8] {
        var resource = ProtoWriter()
        resource.message(1, keyValue("service.name", .string(serviceName)))
        resource.message(1, keyValue("telemetry.sdk.name", .string("meshgate-tracing")))
        var scope = ProtoWriter()
        scope.string(1, "meshgate.tracing")
        scope.string(2, "1.0.0")
        var scopeSpans = ProtoWriter()
        scopeSpans.message(1, scope)
        for span in spans { scopeSpans.message(2, encode(span)) }
        var resourceSpans = ProtoWriter()
        resourceSpans.message(1, resource)
        resourceSpans.message(2, scopeSpans)
        var request = ProtoWriter()
        request.message(1, resourceSpans)
        return request.bytes
    }

    static func encode(_ span: SpanRecord) -> ProtoWriter {
        var w = ProtoWriter()
        w.bytes(1, span.traceID)
        w.bytes(2, span.spanID)
        w.string(3, span.traceState)
        w.bytes(4, span.parentID)
        w.string(5, span.name)
        w.varint(6, span.kind.rawValue)
        w.fixed64(7, span.startUnixNanos)
        w.fixed64(8, span.endUnixNanos)
        for (key, value) in span.attributes { w.message(9, keyValue(key, value)) }
        var status = ProtoWriter()
        if isError(span) {
            status.string(2, span.statusMessage)
            status.varint(3, 2)  // STATUS_CODE_ERROR
        }
        w.message(15, status)
        return w
    }

    /// OTel gRPC conventions: a client span is an error for any non-OK
    /// code; a server span only for UNKNOWN, DEADLINE_EXCEEDED,
    /// UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS.
    static func isError(_ span: SpanRecord) -> Bool {
        switch span.kind {
        case .client: return span.grpcStatus != 0
        case .server: return [2, 4, 12, 13, 14, 15].contains(span.grpcStatus)
        }
    }

    static func keyValue(_ key: String, _ value: SpanRecord.Value) -> ProtoWriter {
        var any = ProtoWriter()
        switch value {
        case .string(let s): any.string(1, s)
        // A oneof member is written even when zero (status code OK is 0).
        case .int(let i): any.varintAlways(3, UInt64(bitPattern: i))
        }
        var kv = ProtoWriter()
        kv.string(1, key)
        kv.message(2, any)
        return kv
    }
}

