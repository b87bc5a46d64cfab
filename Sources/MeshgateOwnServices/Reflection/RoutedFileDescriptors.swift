import ProtoWire

/// The file descriptors one cluster answered, cut down to what the
/// listener routes to that cluster: a `FileDescriptorProto` that declares
/// a service no route sends there (mesh.proto declares MeshService and
/// SampleControl; only MeshService is routed) loses that service, so the
/// gateway never describes a service a client cannot call through it.
/// Messages and enums stay (a routed service's types may live anywhere).
/// A file that lost a service also loses its `source_code_info`, whose
/// locations count services by index (and would carry the removed
/// service's comments).
package struct RoutedFileDescriptors {
    /// Each file, serialized (unchanged, or rewritten without services).
    package var files: [[UInt8]] = []
    /// Full names of the services removed.
    package var removed: Set<String> = []

    // FileDescriptorProto field numbers (google/protobuf/descriptor.proto).
    private static let packageField = 2, serviceField = 6, sourceCodeInfoField = 9
    // ServiceDescriptorProto.name.
    private static let serviceNameField = 1

    /// `descriptors`, each without the services `routed` refuses (given a
    /// service's full name, `package.Service`).
    package init(_ descriptors: [ArraySlice<UInt8>], routed: (String) -> Bool) throws(ProtoDecodeError) {
        for descriptor in descriptors {
            files.append(try Self.filter(descriptor, routed: routed, removed: &removed))
        }
    }

    private static func filter(_ file: ArraySlice<UInt8>, routed: (String) -> Bool, removed: inout Set<String>) throws(ProtoDecodeError) -> [UInt8] {
        // First pass: the package and which services go.
        var package = ""
        var dropping: [String] = []
        var services: [ArraySlice<UInt8>] = []
        var reader = ProtoReader(file)
        while let (field, value) = try reader.next() {
            if field == packageField { package = String(decoding: value.slice, as: UTF8.self) }
            if field == serviceField { services.append(value.slice) }
        }
        for service in services {
            let name = try serviceName(service, package: package)
            if !routed(name) { dropping.append(name) }
        }
        guard !dropping.isEmpty else { return Array(file) }
        removed.formUnion(dropping)
        // Second pass: every field copied as it was, but those.
        var out = ProtoWriter()
        reader = ProtoReader(file)
        var start = reader.offset
        while let (field, value) = try reader.next() {
            defer { start = reader.offset }
            if field == sourceCodeInfoField { continue }
            if field == serviceField, dropping.contains(try serviceName(value.slice, package: package)) { continue }
            out.append(encoded: file[start..<reader.offset])
        }
        return out.bytes
    }

    private static func serviceName(_ service: ArraySlice<UInt8>, package: String) throws(ProtoDecodeError) -> String {
        var reader = ProtoReader(service)
        var name = ""
        while let (field, value) = try reader.next() {
            if field == serviceNameField { name = String(decoding: value.slice, as: UTF8.self) }
        }
        return package.isEmpty ? name : package + "." + name
    }
}
