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
    @inlinable
    public static func cString(_ text: StaticString) -> UnsafePointer<CChar> {
        UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
    }

    /// An mg_str of a string literal (static storage, never written): what a
    /// plugin passes as a header name or log field key. Computed where it is
    /// used (a constant address and length), so it needs no stored global
    /// of a non-Sendable type.
    @inlinable
    public static func str(_ text: StaticString) -> mg_str {
        mg_str(ptr: cString(text), len: text.utf8CodeUnitCount)
    }

    /// The body of a config_new: reads the JSON config (refusing unknown
    /// keys), builds the plugin's config object, and retains it for the
    /// host; a refusal goes into the host's error buffer instead.
    public static func makeConfig(_ json: mg_str, allowedKeys: Set<String>, _ errorBuffer: UnsafeMutablePointer<CChar>?, _ size: Int,
                                  _ build: (PluginConfig) throws(PluginConfig.Invalid) -> AnyObject) -> UnsafeMutableRawPointer? {
        do throws(PluginConfig.Invalid) {
            return retain(try build(try PluginConfig(json: json, allowedKeys: allowedKeys)))
        } catch {
            writeError(error.message, errorBuffer, size)
            return nil
        }
    }

    /// config_new of a plugin that takes no config: accepts {} (or nothing)
    /// and returns a non-NULL marker, as the ABI asks of stateless configs.
    public static func acceptEmptyConfig(_ plugin: String, _ json: mg_str, _ errorBuffer: UnsafeMutablePointer<CChar>?, _ size: Int) -> UnsafeMutableRawPointer? {
        do throws(PluginConfig.Invalid) {
            _ = try PluginConfig(json: json, allowedKeys: [])
            return UnsafeMutableRawPointer(bitPattern: 1)
        } catch {
            writeError("\(plugin) takes no config: \(error.message)", errorBuffer, size)
            return nil
        }
    }

    /// A Swift object handed to the host as an opaque pointer (+1).
    @inlinable
    public static func retain(_ object: AnyObject) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(Unmanaged.passRetained(object).toOpaque())
    }

    /// The object behind a pointer from `retain`, not retained again.
    /// `@inlinable` and without `Optional.map`: plugins call it in every
    /// hook, and across the module boundary the generic version went
    /// through a closure and a retain each time (~1 % of the proxy's CPU
    /// with the tracing filter on).
    @inlinable
    public static func object<T: AnyObject>(_ pointer: UnsafeMutableRawPointer?, as type: T.Type) -> T? {
        guard let pointer else { return nil }
        return Unmanaged<T>.fromOpaque(pointer).takeUnretainedValue()
    }

    @inlinable
    public static func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        Unmanaged<AnyObject>.fromOpaque(pointer).release()
    }

    public static func string(_ s: mg_str) -> String {
        guard let ptr = s.ptr, s.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
    }
}
