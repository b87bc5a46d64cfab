import MeshgateYAML

/// Reads one YAML mapping as a config object: typed field access with
/// located errors, and a final check that no unknown key was given.
public struct YAMLFieldReader {
    public let file: String
    public let path: String
    public let mark: YAMLMark
    private let pairs: [(key: String, keyMark: YAMLMark, value: YAMLNode)]

    /// Refuses any key outside `allowed` up front, so a misspelt key is
    /// reported as such rather than as a missing required field.
    public init(_ node: YAMLNode, file: String, path: String, allowed: [String]) throws(ConfigError) {
        self.file = file
        self.path = path
        self.mark = node.mark
        guard case .mapping(let raw, _) = node else {
            throw ConfigError(file: file, mark: node.mark, field: path, message: "expected a mapping (key: value), found \(node.kindName)")
        }
        var pairs: [(key: String, keyMark: YAMLMark, value: YAMLNode)] = []
        var seen: Set<String> = []
        for (key, value) in raw {
            guard let name = key.scalarText else {
                throw ConfigError(file: file, mark: key.mark, field: path, message: "keys must be plain words")
            }
            if !seen.insert(name).inserted {
                throw ConfigError(file: file, mark: key.mark, field: Self.join(path, name), message: "key given twice")
            }
            guard allowed.contains(name) else {
                let known = allowed.sorted().joined(separator: ", ")
                throw ConfigError(file: file, mark: key.mark, field: Self.join(path, name), message: "unknown key (known keys here: \(known))")
            }
            pairs.append((name, key.mark, value))
        }
        self.pairs = pairs
    }

    public static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func fieldPath(_ key: String) -> String { Self.join(path, key) }

    public func error(_ key: String, _ node: YAMLNode?, _ message: String) -> ConfigError {
        ConfigError(file: file, mark: node?.mark ?? mark, field: fieldPath(key), message: message)
    }

    /// The raw node of `key`; nil when absent or null.
    public func node(_ key: String) -> YAMLNode? {
        guard let entry = pairs.first(where: { $0.key == key }) else { return nil }
        if case .null = entry.value { return nil }
        return entry.value
    }

    public func requiredNode(_ key: String) throws(ConfigError) -> YAMLNode {
        guard let n = node(key) else {
            throw ConfigError(file: file, mark: mark, field: fieldPath(key), message: "required field is missing")
        }
        return n
    }

    public func string(_ key: String) throws(ConfigError) -> String? {
        guard let n = node(key) else { return nil }
        guard let text = n.scalarText else { throw error(key, n, "expected a string, found \(n.kindName)") }
        return text
    }

    public func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try string(key) else {
            throw ConfigError(file: file, mark: mark, field: fieldPath(key), message: "required field is missing")
        }
        guard !s.isEmpty else { throw error(key, node(key), "must not be empty") }
        return s
    }

    public func int(_ key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let n = node(key) else { return nil }
        guard let text = n.scalarText, let value = Int(text) else {
            throw error(key, n, "expected a whole number, found \(n.scalarText.map { "'\($0)'" } ?? n.kindName)")
        }
        guard range.contains(value) else { throw error(key, n, "\(value) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    public func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let n = node(key) else { return nil }
        switch n.scalarText {
        case "true", "True", "yes": return true
        case "false", "False", "no": return false
        default: throw error(key, n, "expected true or false, found \(n.scalarText.map { "'\($0)'" } ?? n.kindName)")
        }
    }

    public func duration(_ key: String) throws(ConfigError) -> Duration? {
        guard let n = node(key) else { return nil }
        guard let text = n.scalarText, let d = DurationParser.parse(text) else {
            throw error(key, n, "expected a duration such as 250ms, 5s or 1m, found \(n.scalarText.map { "'\($0)'" } ?? n.kindName)")
        }
        return d
    }

    public func address(_ key: String) throws(ConfigError) -> SocketAddressSpec? {
        guard let text = try string(key) else { return nil }
        do {
            return try SocketAddressSpec.parse(text)
        } catch {
            throw self.error(key, node(key), "'\(text)': \(error)")
        }
    }

    public func requiredAddress(_ key: String) throws(ConfigError) -> SocketAddressSpec {
        guard let a = try address(key) else {
            throw ConfigError(file: file, mark: mark, field: fieldPath(key), message: "required field is missing")
        }
        return a
    }

    /// The items of a list field (empty when absent).
    public func list(_ key: String) throws(ConfigError) -> [(node: YAMLNode, path: String)] {
        guard let n = node(key) else { return [] }
        guard case .sequence(let items, _) = n else {
            throw error(key, n, "expected a list, found \(n.kindName)")
        }
        return items.enumerated().map { ($0.element, "\(fieldPath(key))[\($0.offset)]") }
    }
}
