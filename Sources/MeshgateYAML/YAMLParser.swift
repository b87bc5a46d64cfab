internal import CYAML

/// A YAML syntax error with its position.
public struct YAMLSyntaxError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var mark: YAMLMark
    /// The document broke a `YAMLLimits` limit, not YAML's grammar.
    public var isLimit = false

    public init(message: String, mark: YAMLMark, isLimit: Bool = false) {
        self.message = message
        self.mark = mark
        self.isLimit = isLimit
    }

    public var description: String { "\(mark): \(message)" }

    /// The message for a person: "YAML syntax error: …", or the limit.
    public var explanation: String { isLimit ? message : "YAML syntax error: \(message)" }
}

/// The one place Meshgate calls libyaml. It turns text into a `YAMLNode` tree.
///
/// Anchors and aliases are refused: configs are small, and aliases make
/// "which line is wrong" ambiguous (and open the door to billion-laughs input).
///
/// The same parser reads the config, watched discovery files and etcd
/// values, so every document is held to `YAMLLimits`: its size is checked
/// before libyaml sees a byte, and its nesting while the tree is built,
/// refusing the first collection past the limit before descending into it
/// (a 100,000-deep `[[[…]]]` would otherwise overflow the stack, building
/// the tree and again freeing it).
public enum YAMLParser {
    public static func parse(_ text: String, limits: YAMLLimits = YAMLLimits()) throws(YAMLSyntaxError) -> YAMLNode {
        let size = text.utf8.count
        guard size <= limits.maxBytes else {
            throw YAMLSyntaxError(message: "the document is \(size) bytes, over the limit of \(limits.maxBytes) bytes",
                                  mark: YAMLMark(line: 1, column: 1), isLimit: true)
        }
        // libyaml keeps pointers into the parser struct: it must not move.
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        defer { parser.deallocate() }
        guard yaml_parser_initialize(parser) == 1 else {
            throw YAMLSyntaxError(message: "libyaml could not initialise a parser", mark: YAMLMark(line: 1, column: 1))
        }
        defer { yaml_parser_delete(parser) }

        var bytes = Array(text.utf8)
        if bytes.isEmpty { bytes = [0x0a] }
        return try bytes.withUnsafeMutableBufferPointer { (buffer) throws(YAMLSyntaxError) -> YAMLNode in
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
            var reader = EventReader(parser: parser, maxDepth: limits.maxDepth)
            return try reader.readDocument()
        }
    }
}

/// Pulls libyaml events and assembles nodes. Each event is deleted right after use.
private struct EventReader {
    let parser: UnsafeMutablePointer<yaml_parser_t>
    let maxDepth: Int
    /// Collections open around the node being read; `readNode` recurses
    /// once per level, so this also bounds the recursion.
    private var depth = 0

    init(parser: UnsafeMutablePointer<yaml_parser_t>, maxDepth: Int) {
        self.parser = parser
        self.maxDepth = maxDepth
    }

    private enum Event {
        case streamStart, streamEnd, documentStart, documentEnd
        case scalar(String, quoted: Bool, YAMLMark)
        case sequenceStart(YAMLMark), sequenceEnd
        case mappingStart(YAMLMark), mappingEnd
        case alias(YAMLMark)
    }

    mutating func readDocument() throws(YAMLSyntaxError) -> YAMLNode {
        guard case .streamStart = try next() else { throw error("expected the start of a YAML stream") }
        let first = try next()
        if case .streamEnd = first { return .null(YAMLMark(line: 1, column: 1)) }
        guard case .documentStart = first else { throw error("expected a YAML document") }
        let root = try readNode(try next())
        guard case .documentEnd = try next() else { throw error("expected the end of the document") }
        let after = try next()
        if case .documentStart = after {
            throw error("the file holds more than one YAML document; Meshgate reads exactly one")
        }
        return root
    }

    private mutating func readNode(_ event: Event) throws(YAMLSyntaxError) -> YAMLNode {
        switch event {
        case .scalar(let text, let quoted, let mark):
            if !quoted && (text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL") {
                return .null(mark)
            }
            return .scalar(text, quoted: quoted, mark)
        case .sequenceStart(let mark):
            try enter(mark)
            defer { depth -= 1 }
            var items: [YAMLNode] = []
            while true {
                let e = try next()
                if case .sequenceEnd = e { break }
                items.append(try readNode(e))
            }
            return .sequence(items, mark)
        case .mappingStart(let mark):
            try enter(mark)
            defer { depth -= 1 }
            var pairs: [(key: YAMLNode, value: YAMLNode)] = []
            while true {
                let e = try next()
                if case .mappingEnd = e { break }
                let key = try readNode(e)
                let value = try readNode(try next())
                pairs.append((key, value))
            }
            return .mapping(pairs, mark)
        case .alias(let mark):
            throw YAMLSyntaxError(message: "YAML aliases (*name) are not supported in Meshgate configs", mark: mark)
        default:
            throw error("unexpected YAML structure")
        }
    }

    /// One more level of nesting, refused past `maxDepth` before anything
    /// inside it is read.
    private mutating func enter(_ mark: YAMLMark) throws(YAMLSyntaxError) {
        guard depth < maxDepth else {
            throw YAMLSyntaxError(message: "lists and mappings nested deeper than \(maxDepth) levels, the limit",
                                  mark: mark, isLimit: true)
        }
        depth += 1
    }

    private func error(_ message: String) -> YAMLSyntaxError {
        let m = parser.pointee.mark
        return YAMLSyntaxError(message: message, mark: YAMLMark(line: Int(m.line) + 1, column: Int(m.column) + 1))
    }

    private mutating func next() throws(YAMLSyntaxError) -> Event {
        var event = yaml_event_t()
        guard yaml_parser_parse(parser, &event) == 1 else {
            let p = parser.pointee
            let problem = p.problem.map { String(cString: $0) } ?? "invalid YAML"
            let context = p.context.map { String(cString: $0) + ": " } ?? ""
            let mark = YAMLMark(line: Int(p.problem_mark.line) + 1, column: Int(p.problem_mark.column) + 1)
            throw YAMLSyntaxError(message: context + problem, mark: mark)
        }
        defer { yaml_event_delete(&event) }
        let mark = YAMLMark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        switch event.type {
        case YAML_STREAM_START_EVENT: return .streamStart
        case YAML_STREAM_END_EVENT: return .streamEnd
        case YAML_DOCUMENT_START_EVENT: return .documentStart
        case YAML_DOCUMENT_END_EVENT: return .documentEnd
        case YAML_SCALAR_EVENT:
            let s = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: s.value, count: Int(s.length)), as: UTF8.self)
            return .scalar(text, quoted: s.style != YAML_PLAIN_SCALAR_STYLE, mark)
        case YAML_SEQUENCE_START_EVENT:
            if event.data.sequence_start.anchor != nil { throw YAMLSyntaxError(message: "YAML anchors (&name) are not supported in Meshgate configs", mark: mark) }
            return .sequenceStart(mark)
        case YAML_SEQUENCE_END_EVENT: return .sequenceEnd
        case YAML_MAPPING_START_EVENT:
            if event.data.mapping_start.anchor != nil { throw YAMLSyntaxError(message: "YAML anchors (&name) are not supported in Meshgate configs", mark: mark) }
            return .mappingStart(mark)
        case YAML_MAPPING_END_EVENT: return .mappingEnd
        case YAML_ALIAS_EVENT: return .alias(mark)
        default: throw YAMLSyntaxError(message: "unexpected YAML event", mark: mark)
        }
    }
}
