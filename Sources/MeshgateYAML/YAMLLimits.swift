/// How large and how deep a document `YAMLParser` accepts. Each caller
/// sets the size for what it reads (a config file, a discovery file, an
/// etcd value); the depth is the same for all: Meshgate's deepest config
/// (a filter's settings under listeners[].routes[].filters[].config) is
/// about ten levels, and an endpoint's JSON three.
public struct YAMLLimits: Sendable, Equatable {
    public static let defaultMaxDepth = 64

    /// Lists and mappings nested inside one another, the root counting as
    /// one; a collection one deeper is refused at its line.
    public var maxDepth: Int
    /// UTF-8 bytes of the whole document.
    public var maxBytes: Int

    public init(maxDepth: Int = YAMLLimits.defaultMaxDepth, maxBytes: Int = .max) {
        self.maxDepth = maxDepth
        self.maxBytes = maxBytes
    }
}
