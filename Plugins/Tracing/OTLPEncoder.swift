import ProtoWire

/// OTLP/protobuf encoding (opentelemetry-proto, collector/trace/v1) into one
/// reused buffer: nested messages are written in place and their lengths
/// patched afterwards, so a batch costs no allocation once the buffer has
/// grown to its size. One per exporter thread.
struct OTLPEncoder {
    private var writer = ProtoWriter()

    mutating func exportRequest(_ spans: [SpanRecord], serviceName: String) -> [UInt8] {
        writer.reset()
        writer.nested(1) { resourceSpans in                          // ExportTraceServiceRequest.resource_spans
            resourceSpans.nested(1) { resource in                    // ResourceSpans.resource
                Self.attribute(&resource, 1, "service.name", string: serviceName[...])
                Self.attribute(&resource, 1, "telemetry.sdk.name", string: "meshgate-tracing")
            }
            resourceSpans.nested(2) { scopeSpans in                  // ResourceSpans.scope_spans
                scopeSpans.nested(1) { scope in
                    scope.string(1, "meshgate.tracing")
                    scope.string(2, "1.0.0")
                }
                for span in spans { scopeSpans.nested(2) { Self.encode(span, into: &$0) } }
            }
        }
        return writer.bytes
    }

    static func encode(_ span: SpanRecord, into w: inout ProtoWriter) {
        w.fixedBytes(1, high: span.traceID.high, low: span.traceID.low)
        w.fixedBytes(2, span.spanID)
        w.string(3, span.traceState)
        if span.parentID != 0 { w.fixedBytes(4, span.parentID) }
        w.string(5, span.path.hasPrefix("/") ? span.path.dropFirst() : span.path[...])
        w.varint(6, span.kind.rawValue)
        w.fixed64(7, span.startUnixNanos)
        w.fixed64(8, span.endUnixNanos)
        let (service, method) = serviceAndMethod(span.path)
        attribute(&w, 9, "rpc.system", string: "grpc")
        attribute(&w, 9, "rpc.service", string: service)
        attribute(&w, 9, "rpc.method", string: method)
        attribute(&w, 9, "rpc.grpc.status_code", int: Int64(span.grpcStatus))
        attribute(&w, 9, span.kind == .server ? "meshgate.attempts" : "meshgate.attempt", int: Int64(span.attempts))
        if let (host, port) = splitAddress(span.peer) {
            attribute(&w, 9, "server.address", string: host)
            attribute(&w, 9, "server.port", int: Int64(port))
            if span.kind == .client { attribute(&w, 9, "network.peer.address", string: host) }
        }
        if span.transportFailure { attribute(&w, 9, "meshgate.transport_failure", int: 1) }
        w.nested(15) { status in
            if isError(span) {
                status.string(2, span.statusMessage)
                status.varint(3, 2)  // STATUS_CODE_ERROR
            }
        }
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

    /// A KeyValue with a string AnyValue.
    static func attribute(_ w: inout ProtoWriter, _ field: Int, _ key: StaticString, string value: Substring) {
        w.nested(field) { kv in
            kv.string(1, key)
            kv.nested(2) { $0.string(1, value) }
        }
    }

    /// A KeyValue with an int AnyValue; a oneof member is written even when
    /// zero (status code OK is 0).
    static func attribute(_ w: inout ProtoWriter, _ field: Int, _ key: StaticString, int value: Int64) {
        w.nested(field) { kv in
            kv.string(1, key)
            kv.nested(2) { $0.varintAlways(3, UInt64(bitPattern: value)) }
        }
    }

    /// "/pkg.Service/Method" -> ("pkg.Service", "Method").
    static func serviceAndMethod(_ path: String) -> (Substring, Substring) {
        let parts = path.split(separator: "/")
        return parts.count == 2 ? (parts[0], parts[1]) : (path[...], "")
    }

    /// "host:port" or "[v6]:port".
    static func splitAddress(_ text: String) -> (Substring, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (host, port)
    }
}
