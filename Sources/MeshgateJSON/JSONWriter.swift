/// Builds one JSON document into a string: values in the order written,
/// commas and colons placed by the writer, strings through `JSONString`.
/// The one way admin bodies (`/config`, `/clusters`, `/plugins`,
/// `/events`, the dashboard's data) are built.
///
///     var json = JSONWriter()
///     json.object { o in
///         o.field("name", "a")
///         o.field("endpoints") { $0.array(endpoints) { $0.string($1.address) } }
///     }
///     json.text  // {"name":"a","endpoints":["10.0.0.1:50051"]}
public struct JSONWriter {
    public private(set) var text = ""
    /// A value was written in the current container: the next one needs a comma.
    private var needsComma = false

    public init() {}

    // MARK: Values

    public mutating func string(_ value: String) {
        separate()
        JSONString.write(value, into: &text)
    }

    /// The string, or null.
    public mutating func string(_ value: String?) {
        guard let value else { return null() }
        string(value)
    }

    public mutating func int<I: BinaryInteger>(_ value: I) {
        separate()
        text += String(value)
    }

    public mutating func bool(_ value: Bool) {
        separate()
        text += value ? "true" : "false"
    }

    /// Swift's shortest form of `value`; null when it is missing or not finite.
    public mutating func double(_ value: Double?) {
        guard let value, value.isFinite else { return null() }
        separate()
        text += String(value)
    }

    /// `value` cut (toward zero) to multiples of `1 / scale` (`scale` 1000:
    /// three decimals), for numbers shown to people; null when missing or
    /// not finite.
    public mutating func double(_ value: Double?, scale: Double) {
        guard let value, value.isFinite else { return null() }
        double(Double(Int64(value * scale)) / scale)
    }

    public mutating func null() {
        separate()
        text += "null"
    }

    /// `json`, which is already JSON (a YAML node's `jsonText`).
    public mutating func raw(_ json: String) {
        separate()
        text += json
    }

    // MARK: Containers

    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        open("{")
        body(&self)
        close("}")
    }

    public mutating func array(_ body: (inout JSONWriter) -> Void) {
        open("[")
        body(&self)
        close("]")
    }

    /// An array of one value per item.
    public mutating func array<S: Sequence>(_ items: S, _ element: (inout JSONWriter, S.Element) -> Void) {
        open("[")
        for item in items { element(&self, item) }
        close("]")
    }

    // MARK: Object members

    /// A member's name; the value written next is its value.
    public mutating func key(_ name: String) {
        separate()
        JSONString.write(name, into: &text)
        text += ":"
        needsComma = false
    }

    public mutating func field(_ name: String, _ value: String) {
        key(name)
        string(value)
    }

    public mutating func field(_ name: String, _ value: String?) {
        key(name)
        string(value)
    }

    public mutating func field<I: BinaryInteger>(_ name: String, _ value: I) {
        key(name)
        int(value)
    }

    public mutating func field(_ name: String, _ value: Bool) {
        key(name)
        bool(value)
    }

    /// A member whose value `body` writes (an object, an array, a number).
    public mutating func field(_ name: String, _ body: (inout JSONWriter) -> Void) {
        key(name)
        body(&self)
    }

    // MARK: Internals

    private mutating func separate() {
        if needsComma { text += "," }
        needsComma = true
    }

    private mutating func open(_ bracket: String) {
        separate()
        text += bracket
        needsComma = false
    }

    private mutating func close(_ bracket: String) {
        text += bracket
        needsComma = true
    }
}
