import FilterABI

/// The host's function table, kept by the plugin's entry.
///
/// `nonisolated(unsafe)`: written by the entry (`accept`, from
/// `PluginDescriptor.entry`), which the host calls on its control thread
/// once per loaded image and before it can call any hook; only read after
/// that. (A hot-swapped image is a new image, with its own `table`.)
public enum PluginHost {
    nonisolated(unsafe) public static var table: UnsafePointer<mg_host>?

    public static func log(_ level: Int32, _ plugin: StaticString, _ message: String) {
        guard let log = table?.pointee.log else { return }
        var message = message
        message.withUTF8 { bytes in
            log(level, mg_str(ptr: PluginSupport.cString(plugin), len: plugin.utf8CodeUnitCount),
                mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count))
        }
    }

    /// Whether the host's table has the field at `offset` (a later minor
    /// version's function).
    public static func offers(_ field: PartialKeyPath<mg_host>) -> Bool {
        guard let table, let offset = MemoryLayout<mg_host>.offset(of: field) else { return false }
        return Int(table.pointee.size) >= offset + MemoryLayout<UnsafeRawPointer>.size
    }

    /// Declares a /metrics counter (ABI 1.1); 0 (adds are ignored) on an
    /// older host or for an invalid name.
    public static func declareCounter(_ name: String, help: String, labels: String = "") -> UInt64 {
        guard offers(\mg_host.counter_declare), let declare = table?.pointee.counter_declare else { return 0 }
        var name = name, help = help, labels = labels
        return name.withUTF8 { n in help.withUTF8 { h in labels.withUTF8 { l in declare(str(n), str(h), str(l)) } } }
    }

    public static func add(_ counter: UInt64, _ delta: UInt64 = 1) {
        guard counter != 0, let add = table?.pointee.counter_add else { return }
        add(counter, delta)
    }

    /// A Prometheus label value as the exposition takes it raw: quotes,
    /// backslashes and line breaks become "_".
    public static func labelValue(_ text: String) -> String {
        String(text.map { $0 == "\"" || $0 == "\\" || $0 == "\n" ? "_" : $0 })
    }

    /// The first value of request header `name` (lower-case), valid until
    /// the call ends; nil when the call has none.
    public static func requestHeader(_ call: OpaquePointer?, _ name: String) -> UnsafeRawBufferPointer? {
        guard let host = table?.pointee else { return nil }
        var name = name
        var value = mg_str(ptr: nil, len: 0)
        guard name.withUTF8({ host.call_request_header(call, str($0), 0, &value) }) == 1 else { return nil }
        return UnsafeRawBufferPointer(start: value.ptr, count: value.ptr == nil ? 0 : value.len)
    }

    /// call_local_reply with `message` (the host copies it).
    public static func localReply(_ call: OpaquePointer?, _ status: Int32, _ message: String) {
        guard let host = table?.pointee else { return }
        var message = message
        message.withUTF8 { host.call_local_reply(call, status, str($0)) }
    }

    /// call_add_response_header; false when the host refused the field.
    @discardableResult
    public static func addResponseHeader(_ call: OpaquePointer?, _ name: String, _ value: String) -> Bool {
        guard let host = table?.pointee else { return false }
        var name = name, value = value
        return name.withUTF8 { n in value.withUTF8 { v in host.call_add_response_header(call, str(n), str(v)) } } == 0
    }

    public static func str(_ bytes: UnsafeBufferPointer<UInt8>) -> mg_str {
        mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count)
    }

    /// Accepts the host when it speaks this ABI's major version.
    public static func accept(_ host: UnsafePointer<mg_host>?) -> Bool {
        guard let host, host.pointee.abi_major == UInt32(MG_ABI_MAJOR) else { return false }
        table = host
        return true
    }
}
