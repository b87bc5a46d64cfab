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

    /// A descriptor for ABI 1.0 with identity filled in and no hooks yet.
    public static func descriptor(name: StaticString, version: StaticString, kinds: Int) -> mg_plugin {
        var d = mg_plugin()
        d.size = UInt32(MemoryLayout<mg_plugin>.size)
        d.abi_major = UInt32(MG_ABI_MAJOR)
        d.abi_minor = 0
        d.kinds = UInt32(kinds)
        d.name = cString(name)
        d.version = cString(version)
        return d
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

    /// Stores the descriptor for the life of the process.
    public static func publish(_ descriptor: mg_plugin) -> UnsafePointer<mg_plugin> {
        let storage = UnsafeMutablePointer<mg_plugin>.allocate(capacity: 1)
        storage.initialize(to: descriptor)
        return UnsafePointer(storage)
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
