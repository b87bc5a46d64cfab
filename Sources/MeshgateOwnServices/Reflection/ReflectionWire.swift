import ProtoWire

/// The parts of grpc.reflection's ServerReflectionRequest/Response the
/// gateway reads and writes (v1 and v1alpha are the same on the wire).
/// Requests are forwarded upstream as the client's own bytes, and answers
/// from one cluster pass back unchanged; only a merged `list_services`
/// answer and the gateway's own errors are written here.
package enum ReflectionRequest: Equatable {
    case listServices
    case fileByFilename(String)
    case fileContainingSymbol(String)
    case fileContainingExtension(type: String, number: Int32)
    case allExtensionNumbersOfType(String)
    /// No request field set (or only ones this gateway does not know).
    case empty

    /// The symbol whose service decides which cluster answers, if any.
    package var symbol: String? {
        switch self {
        case .fileContainingSymbol(let s), .allExtensionNumbersOfType(let s): return s
        case .fileContainingExtension(let type, _): return type
        default: return nil
        }
    }

    /// What the request asks, as a key for `ReflectionCache`'s misses
    /// (nil: not a question one cluster answers).
    package var cacheKey: String? {
        switch self {
        case .fileByFilename(let name): return "file " + name
        case .fileContainingSymbol(let symbol): return "symbol " + symbol
        case .fileContainingExtension(let type, let number): return "extension \(type) \(number)"
        case .allExtensionNumbersOfType(let type): return "extension numbers " + type
        case .listServices, .empty: return nil
        }
    }

    // Field numbers of ServerReflectionRequest.
    private enum Field {
        package static let host = 1, fileByFilename = 3, fileContainingSymbol = 4, fileContainingExtension = 5
        package static let allExtensionNumbersOfType = 6, listServices = 7
    }

    package static func decode(_ bytes: [UInt8]) throws(ProtoDecodeError) -> (host: String, request: ReflectionRequest) {
        var reader = ProtoReader(bytes)
        var host = ""
        var request = ReflectionRequest.empty
        while let (field, value) = try reader.next() {
            switch field {
            case Field.host: host = String(decoding: value.slice, as: UTF8.self)
            case Field.fileByFilename: request = .fileByFilename(String(decoding: value.slice, as: UTF8.self))
            case Field.fileContainingSymbol: request = .fileContainingSymbol(String(decoding: value.slice, as: UTF8.self))
            case Field.allExtensionNumbersOfType: request = .allExtensionNumbersOfType(String(decoding: value.slice, as: UTF8.self))
            case Field.listServices: request = .listServices
            case Field.fileContainingExtension:
                var inner = ProtoReader(value.slice)
                var type = ""
                var number: Int32 = 0
                while let (f, v) = try inner.next() {
                    if f == 1 { type = String(decoding: v.slice, as: UTF8.self) }
                    if f == 2 { number = Int32(truncatingIfNeeded: v.int64) }
                }
                request = .fileContainingExtension(type: type, number: number)
            default: break
            }
        }
        return (host, request)
    }
}

package enum ReflectionResponse {
    /// What an upstream answered.
    package enum Parsed: Equatable {
        case services([String])
        /// File descriptors, by the `name` of each (what later
        /// `file_by_filename` requests for dependencies ask for).
        case files([String])
        case error(code: Int32, message: String)
        case other
    }

    // Field numbers of ServerReflectionResponse.
    private enum Field {
        package static let validHost = 1, originalRequest = 2, fileDescriptorResponse = 4, listServicesResponse = 6, errorResponse = 7
    }

    package static func parse(_ bytes: [UInt8]) throws(ProtoDecodeError) -> Parsed {
        var reader = ProtoReader(bytes)
        var parsed = Parsed.other
        while let (field, value) = try reader.next() {
            switch field {
            case Field.listServicesResponse:
                var names: [String] = []
                var list = ProtoReader(value.slice)
                while let (f, service) = try list.next() {
                    guard f == 1 else { continue }
                    var s = ProtoReader(service.slice)
                    while let (g, name) = try s.next() {
                        if g == 1 { names.append(String(decoding: name.slice, as: UTF8.self)) }
                    }
                }
                parsed = .services(names)
            case Field.fileDescriptorResponse:
                var names: [String] = []
                var files = ProtoReader(value.slice)
                while let (f, file) = try files.next() {
                    guard f == 1 else { continue }
                    // FileDescriptorProto.name is field 1.
                    var d = ProtoReader(file.slice)
                    while let (g, name) = try d.next() {
                        if g == 1 { names.append(String(decoding: name.slice, as: UTF8.self)); break }
                    }
                }
                parsed = .files(names)
            case Field.errorResponse:
                var e = ProtoReader(value.slice)
                var code: Int32 = 0
                var message = ""
                while let (f, v) = try e.next() {
                    if f == 1 { code = Int32(truncatingIfNeeded: v.int64) }
                    if f == 2 { message = String(decoding: v.slice, as: UTF8.self) }
                }
                parsed = .error(code: code, message: message)
            default: break
            }
        }
        return parsed
    }

    /// The serialized FileDescriptorProtos of a `file_descriptor_response`;
    /// nil for any other answer.
    package static func descriptors(_ bytes: [UInt8]) throws(ProtoDecodeError) -> [ArraySlice<UInt8>]? {
        var reader = ProtoReader(bytes)
        var found: [ArraySlice<UInt8>]?
        while let (field, value) = try reader.next() {
            guard field == Field.fileDescriptorResponse else { continue }
            var files = ProtoReader(value.slice)
            var list: [ArraySlice<UInt8>] = []
            while let (f, file) = try files.next() {
                if f == 1 { list.append(file.slice) }
            }
            found = list
        }
        return found
    }

    /// A `list_services` answer to `request` (the client's bytes, echoed as
    /// `original_request`).
    package static func list(_ services: [String], host: String, request: [UInt8]) -> [UInt8] {
        var out = header(host: host, request: request)
        out.nested(Field.listServicesResponse) { list in
            for name in services {
                list.nested(1) { $0.string(1, name) }
            }
        }
        return out.bytes
    }

    /// A `file_descriptor_response` with serialized FileDescriptorProtos.
    package static func files(_ descriptors: [[UInt8]], host: String, request: [UInt8]) -> [UInt8] {
        var out = header(host: host, request: request)
        out.nested(Field.fileDescriptorResponse) { files in
            for descriptor in descriptors { files.bytes(1, descriptor) }
        }
        return out.bytes
    }

    package static func error(code: Int32, _ message: String, host: String, request: [UInt8]) -> [UInt8] {
        var out = header(host: host, request: request)
        out.nested(Field.errorResponse) { e in
            e.varint(1, UInt64(UInt32(bitPattern: code)))
            e.string(2, message)
        }
        return out.bytes
    }

    private static func header(host: String, request: [UInt8]) -> ProtoWriter {
        var out = ProtoWriter()
        if !host.isEmpty { out.string(Field.validHost, host) }
        out.bytes(Field.originalRequest, request)
        return out
    }
}
