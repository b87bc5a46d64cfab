import FilterABI
import MeshgatePosix
import MeshgateSupport
import MeshgateUpstream

/// `meshgate plugin inspect`: a plugin loaded the way the gateway loads
/// one (a private copy by content hash, the entry point, every ABI check),
/// described, and optionally given a config to accept or refuse, on the
/// control thread as `config_new` always runs.
public struct PluginInspection: Sendable {
    public var path: String
    public var loadedFrom: String
    public var sha256: String
    public var name: String
    public var version: String
    public var abi: String
    public var kinds: [String]
    /// nil: no config given; else whether `config_new` accepted it, and
    /// the plugin's message when it did not.
    public var configAccepted: Bool?
    public var configMessage: String?

    public enum Failure: Error, CustomStringConvertible {
        /// The file cannot be loaded as a plugin (path, ABI version, …).
        case load(String)
        public var description: String {
            switch self { case .load(let message): return message }
        }
    }

    public static func kindNames(_ kinds: UInt32) -> [String] {
        var names: [String] = []
        if kinds & UInt32(MG_KIND_FILTER) != 0 { names.append("filter") }
        if kinds & UInt32(MG_KIND_BALANCER) != 0 { names.append("balancer") }
        if kinds & UInt32(MG_KIND_RETRY) != 0 { names.append("retry") }
        if kinds & UInt32(MG_KIND_HEDGE) != 0 { names.append("hedge") }
        return names
    }

    public static func inspect(path: String, configJSON: String?, host: PluginHostTable) throws(Failure) -> PluginInspection {
        let result = ControlThread.run { Result { () throws(Failure) -> PluginInspection in try inspectOnControlThread(path: path, configJSON: configJSON, host: host) } }
        return try result.get()
    }

    private static func inspectOnControlThread(path: String, configJSON: String?, host: PluginHostTable) throws(Failure) -> PluginInspection {
        let image: PluginImage
        do {
            image = try PluginImage.load(path: path, cacheDirectory: "/tmp/meshgate-plugins-\(Posix.userID)", host: host)
        } catch {
            throw .load("\(error)")
        }
        var inspection = PluginInspection(path: image.path, loadedFrom: image.loadedPath, sha256: image.sha256, name: image.name,
                                          version: image.version, abi: "\(image.abiMajor).\(image.abiMinor)",
                                          kinds: kindNames(image.kinds))
        if var json = configJSON {
            let context = PluginConfigContext(ejections: EjectionRegistry())
            var error = [CChar](repeating: 0, count: 1024)
            let created: UnsafeMutableRawPointer? = json.withUTF8 { bytes in
                let text = mg_str(ptr: UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self), len: bytes.count)
                return image.hooks.config_new!(context.opaque, text, &error, error.count)
            }
            if let created {
                inspection.configAccepted = true
                context.cancelAllTimers()
                image.hooks.config_destroy?(created)
            } else {
                inspection.configAccepted = false
                let reason = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                inspection.configMessage = reason.isEmpty ? "no reason given" : reason
            }
        }
        return inspection
    }
}
