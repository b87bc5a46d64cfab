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

    /// Accepts the host when it speaks this ABI's major version.
    public static func accept(_ host: UnsafePointer<mg_host>?) -> Bool {
        guard let host, host.pointee.abi_major == UInt32(MG_ABI_MAJOR) else { return false }
        table = host
        return true
    }
}
