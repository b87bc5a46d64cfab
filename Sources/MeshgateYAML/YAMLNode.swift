/// A position in a YAML document, 1-based as editors show it.
public struct YAMLMark: Sendable, Hashable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A parsed YAML document as a tree that remembers where each node came from,
/// so that config errors can name the line and column of the offending value.
public indirect enum YAMLNode: Sendable {
    case scalar(String, quoted: Bool, YAMLMark)
    case mapping([(key: YAMLNode, value: YAMLNode)], YAMLMark)
    case sequence([YAMLNode], YAMLMark)
    /// An empty document, or a key with no value (`key:`).
    case null(YAMLMark)

    public var mark: YAMLMark {
        switch self {
        case .scalar(_, _, let m), .mapping(_, let m), .sequence(_, let m), .null(let m): return m
        }
    }

    public var kindName: String {
        switch self {
        case .scalar: return "a scalar"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .null: return "nothing"
        }
    }

    /// The scalar text, if this node is a scalar.
    public var scalarText: String? {
        if case .scalar(let text, _, _) = self { return text }
        return nil
    }
}
