import MeshgateHTTP2

/// What the gateway does with each field of a client's request head when
/// it builds an attempt's: decided on the name's bytes (length first), so
/// passing a field on makes no String and compares at most one name.
enum UpstreamRequestField {
    enum Treatment {
        /// Copied as is.
        case pass
        /// The gateway sets its own (`grpc-timeout` from the remaining
        /// deadline, `grpc-previous-rpc-attempts`), or the field is
        /// hop-by-hop (RFC 9113 8.2.2).
        case drop
        /// `:scheme`: the upstream's.
        case scheme
    }

    static func treatment(of name: UnsafeRawBufferPointer) -> Treatment {
        switch name.count {
        case 7:
            if matches(name, ":scheme") { return .scheme }
            return matches(name, "upgrade") ? .drop : .pass
        case 10: return matches(name, "connection") || matches(name, "keep-alive") ? .drop : .pass
        case 12: return matches(name, "grpc-timeout") ? .drop : .pass
        case 16: return matches(name, "proxy-connection") ? .drop : .pass
        case 17: return matches(name, "transfer-encoding") ? .drop : .pass
        case 26: return matches(name, "grpc-previous-rpc-attempts") ? .drop : .pass
        default: return .pass
        }
    }

    /// Whether `list` has a field named `name` (bytes).
    static func list(_ list: HTTP2HeaderList, names name: UnsafeRawBufferPointer) -> Bool {
        var found = false
        list.forEachField { fieldName, _ in
            found = fieldName.count == name.count && memoryEqual(fieldName, name)
            return !found
        }
        return found
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        literal.utf8CodeUnitCount == bytes.count
            && memoryEqual(bytes, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    private static func memoryEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }
}
