import MeshgateConfig

extension RouteMatchConfig {
    /// Whether a call to `path` passes this match's path criteria (service,
    /// method, prefix), whatever its headers.
    public func pathMatches(_ path: String) -> Bool {
        if let s = service, !(path.hasPrefix("/") && path.dropFirst().hasPrefix(s) && path.dropFirst(s.count + 1).hasPrefix("/")) { return false }
        if let m = method, path != m { return false }
        if let p = pathPrefix, !path.hasPrefix(p) { return false }
        return true
    }
}
