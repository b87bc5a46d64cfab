import MeshgateConfig

/// Finds the first route (in declaration order) matching a request path
/// without scanning every route: a route is filed under the most specific
/// part of its match, and only the routes filed where the path leads are
/// checked in full.
///
/// - a `method` route under its full path, in a hash table;
/// - a `service` route under its service name, in a hash table keyed by the
///   path's first segment;
/// - a `path_prefix` route in a byte trie, at the node its prefix ends on;
/// - anything else (headers only, or nothing) in a list checked for every path.
///
/// Each bucket keeps its route indices ascending, so the lookup walks the
/// buckets the path reaches and stops in each one at the first full match or
/// at the best index found so far: 1,000 routes cost about what one does.
/// Built once per generation; lookups do not allocate.
public struct RouteIndex: Sendable {
    private var byMethod: [Substring: [Int]] = [:]
    private var byService: [Substring: [Int]] = [:]
    private var prefixTrie = PrefixTrie()
    private var everyPath: [Int] = []

    public init(_ routes: [RouteConfig]) {
        for (index, route) in routes.enumerated() {
            let match = route.match
            if let method = match.method {
                byMethod[method[...], default: []].append(index)
            } else if let service = match.service, !service.utf8.contains(UInt8(ascii: "/")) {
                byService[service[...], default: []].append(index)
            } else if let prefix = match.pathPrefix {
                prefixTrie.insert(prefix, route: index)
            } else {
                // A service name with a '/' in it cannot be a path's first
                // segment; it is checked in full like a catch-all.
                everyPath.append(index)
            }
        }
    }

    /// The lowest route index for which `matches(index)` holds, among the
    /// routes `path` can reach; nil if none.
    public func first(path: String, where matches: (Int) -> Bool) -> Int? {
        var best = Int.max
        Self.scan(everyPath, below: &best, matches)
        if !byMethod.isEmpty, let bucket = byMethod[path[...]] {
            Self.scan(bucket, below: &best, matches)
        }
        if !byService.isEmpty, let service = Self.firstSegment(of: path), let bucket = byService[service] {
            Self.scan(bucket, below: &best, matches)
        }
        prefixTrie.forEachRouteList(along: path) { Self.scan($0, below: &best, matches) }
        return best == Int.max ? nil : best
    }

    /// Lowers `best` to the first index in `bucket` (ascending) that matches,
    /// looking only at indices below the current best.
    private static func scan(_ bucket: [Int], below best: inout Int, _ matches: (Int) -> Bool) {
        for index in bucket {
            if index >= best { return }
            if matches(index) { best = index; return }
        }
    }

    /// "pkg.Service" of "/pkg.Service/…", as a slice of `path`; nil when the
    /// path has no second '/'.
    private static func firstSegment(of path: String) -> Substring? {
        let utf8 = path.utf8
        guard utf8.first == UInt8(ascii: "/"),
              let end = utf8.dropFirst().firstIndex(of: UInt8(ascii: "/")) else { return nil }
        return path[utf8.index(after: utf8.startIndex)..<end]
    }
}

/// A byte trie of path prefixes. Nodes live in one array and name their
/// children by index; a node's route list holds the routes whose prefix ends
/// there.
public struct PrefixTrie: Sendable {
    private struct Node: Sendable {
        /// (byte, child node index), few per node: a linear scan beats hashing.
        public var children: [(byte: UInt8, node: Int32)] = []
        public var routes: [Int] = []
    }

    private var nodes: [Node] = [Node()]

    public mutating func insert(_ prefix: String, route: Int) {
        var current = 0
        for byte in prefix.utf8 {
            if let next = child(of: current, byte) {
                current = next
            } else {
                nodes.append(Node())
                let next = nodes.count - 1
                nodes[current].children.append((byte, Int32(next)))
                current = next
            }
        }
        nodes[current].routes.append(route)
    }

    /// Calls `body` with the route list of every node `path` passes through
    /// (every prefix of `path` some route declared), shortest first.
    public func forEachRouteList(along path: String, _ body: ([Int]) -> Void) {
        if !nodes[0].routes.isEmpty { body(nodes[0].routes) }
        if nodes.count == 1 { return }
        var current = 0
        for byte in path.utf8 {
            guard let next = child(of: current, byte) else { return }
            current = next
            if !nodes[current].routes.isEmpty { body(nodes[current].routes) }
        }
    }

    private func child(of node: Int, _ byte: UInt8) -> Int? {
        for entry in nodes[node].children where entry.byte == byte { return Int(entry.node) }
        return nil
    }
}
