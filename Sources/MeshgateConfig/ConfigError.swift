import MeshgateYAML

/// A config problem, located: file, line, column and the field's path.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var mark: YAMLMark?
    /// Dotted path of the field, e.g. `listeners[0].routes[1].cluster`.
    public var field: String
    public var message: String

    public init(file: String, mark: YAMLMark?, field: String, message: String) {
        self.file = file
        self.mark = mark
        self.field = field
        self.message = message
    }

    public var description: String {
        let place = mark.map { "\(file):\($0.line):\($0.column)" } ?? file
        return field.isEmpty ? "\(place): \(message)" : "\(place): \(field): \(message)"
    }
}
