import FilterABI

/// The host's function table, kept by the plugin's entry.
///
/// `nonisolated(unsafe)`: written once by the entry (on the control thread)
/// before the host can call any hook; only read after that.
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

    private static func str(_ bytes: UnsafeBufferPointer<UInt8>) -> mg_str {
        mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count)
    }

    /// Accepts the host when it speaks this ABI's major version.
    public static func accept(_ host: UnsafePointer<mg_host>?) -> Bool {
        guard let host, host.pointee.abi_major == UInt32(MG_ABI_MAJOR) else { return false }
        table = host
        return true
    }
}
