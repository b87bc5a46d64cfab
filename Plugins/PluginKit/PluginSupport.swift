import FilterABI

/// The small pieces every Swift plugin repeats at the C boundary.
public enum PluginSupport {
    /// Writes `message` NUL-terminated into the host's error buffer.
    public static func writeError(_ message: String, _ buffer: UnsafeMutablePointer<CChar>?, _ size: Int) {
        guard let buffer, size > 0 else { return }
        let bytes = Array(message.utf8CString.prefix(size - 1)) + [0]
        buffer.update(from: bytes, count: bytes.count)
    }

    /// A C string with static storage, as mg_plugin.name and .version need.
    public static func cString(_ text: StaticString) -> UnsafePointer<CChar> {
        UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
    }

    /// Stores the descriptor for the life of the process.
    public static func publish(_ descriptor: mg_plugin) -> UnsafePointer<mg_plugin> {
        let storage = UnsafeMutablePointer<mg_plugin>.allocate(capacity: 1)
        storage.initialize(to: descriptor)
        return UnsafePointer(storage)
    }

    /// A Swift object handed to the host as an opaque pointer (+1).
    public static func retain(_ object: AnyObject) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(Unmanaged.passRetained(object).toOpaque())
    }

    public static func object<T: AnyObject>(_ pointer: UnsafeMutableRawPointer?, as type: T.Type) -> T? {
        pointer.map { Unmanaged<T>.fromOpaque($0).takeUnretainedValue() }
    }

    public static func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        Unmanaged<AnyObject>.fromOpaque(pointer).release()
    }

    public static func string(_ s: mg_str) -> String {
        guard let ptr = s.ptr, s.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
    }
}
