/// A gRPC request path, "/pkg.Service/Method".
public enum GRPCPath {
    /// ("pkg.Service", "Method") as slices of `path`, without copies (the
    /// access log calls this per RPC); (path, "") for anything else.
    public static func serviceAndMethod(_ path: String) -> (service: Substring, method: Substring) {
        let slash = UInt8(ascii: "/")
        let utf8 = path.utf8
        guard utf8.first == slash, let middle = utf8.dropFirst().firstIndex(of: slash) else { return (path[...], "") }
        let service = path[utf8.index(after: utf8.startIndex)..<middle]
        let method = path[utf8.index(after: middle)...]
        guard !service.isEmpty, !method.isEmpty, !method.utf8.contains(slash) else { return (path[...], "") }
        return (service, method)
    }
}
