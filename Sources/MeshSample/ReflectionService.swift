import Foundation
import MeshProto
import MeshgateGRPC
import MeshgateGRPCCalls

/// gRPC server reflection, v1 and v1alpha (their messages are identical on
/// the wire), answering from the descriptors embedded at generation time.
enum ReflectionService {
    static let services = [
        "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection", "mesh.v1.MeshService", "mesh.v1.SampleControl",
    ]

    static func register(_ table: inout [String: (GRPCServerCall, ReplicaState) -> Void]) {
        table["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = info
        table["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"] = info
    }

    static func info(_ call: GRPCServerCall, _ replica: ReplicaState) {
        call.onMessage = { bytes in
            guard let request = call.decode(Grpc_Reflection_V1alpha_ServerReflectionRequest.self, bytes) else {
                return call.finish(GRPCStatus(.invalidArgument, "malformed ServerReflectionRequest"))
            }
            call.send(answer(request))
        }
        call.onEnd = { call.finish() }
    }

    static func answer(_ request: Grpc_Reflection_V1alpha_ServerReflectionRequest) -> Grpc_Reflection_V1alpha_ServerReflectionResponse {
        var response = Grpc_Reflection_V1alpha_ServerReflectionResponse()
        response.validHost = request.host
        response.originalRequest = request
        switch request.messageRequest {
        case .listServices:
            var list = Grpc_Reflection_V1alpha_ListServiceResponse()
            list.service = services.map { name in
                var s = Grpc_Reflection_V1alpha_ServiceResponse()
                s.name = name
                return s
            }
            response.messageResponse = .listServicesResponse(list)
        case .fileByFilename(let name):
            if let file = MeshFileDescriptors.all.first(where: { $0.name == name }) {
                response.messageResponse = .fileDescriptorResponse(files([file.bytes]))
            } else {
                response.messageResponse = .errorResponse(notFound("file '\(name)' not found"))
            }
        case .fileContainingSymbol(let symbol):
            if let file = fileDefining(symbol) {
                response.messageResponse = .fileDescriptorResponse(files([file]))
            } else {
                response.messageResponse = .errorResponse(notFound("symbol '\(symbol)' not found"))
            }
        case .fileContainingExtension, .allExtensionNumbersOfType:
            response.messageResponse = .errorResponse(notFound("no extensions are defined"))
        case nil:
            response.messageResponse = .errorResponse(notFound("empty request"))
        }
        return response
    }

    /// The file that defines `symbol`, or its parent (a method's service).
    static func fileDefining(_ symbol: String) -> [UInt8]? {
        var name = Substring(symbol)
        while !name.isEmpty {
            for (file, symbols) in MeshFileDescriptors.symbolsByFile where symbols.contains(String(name)) {
                return MeshFileDescriptors.all.first { $0.name == file }?.bytes
            }
            guard let dot = name.lastIndex(of: ".") else { break }
            name = name[..<dot]
        }
        return nil
    }

    static func files(_ descriptors: [[UInt8]]) -> Grpc_Reflection_V1alpha_FileDescriptorResponse {
        var r = Grpc_Reflection_V1alpha_FileDescriptorResponse()
        r.fileDescriptorProto = descriptors.map { Data($0) }
        return r
    }

    static func notFound(_ message: String) -> Grpc_Reflection_V1alpha_ErrorResponse {
        var e = Grpc_Reflection_V1alpha_ErrorResponse()
        e.errorCode = Int32(GRPCStatusCode.notFound.rawValue)
        e.errorMessage = message
        return e
    }
}
