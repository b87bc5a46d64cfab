import MeshgatePosix
import MeshgateTLS
import NIOConcurrencyHelpers
import MeshgateConfig

/// The current TLS context of one listener or cluster, rebuilt when its
/// files change. New handshakes take `current`; established connections
/// keep the context they started with. A file that cannot be read, or a
/// key that does not match its certificate, keeps the previous material
/// and logs why.
public final class TLSContextSource: Sendable {
    public let files: TLSFilesConfig
    public let role: TLSContext.Role
    private let state: NIOLockedValueBox<(context: TLSContext, stamps: [String])>

    /// Builds the first context; a ConfigError names the config field.
    public init(_ files: TLSFilesConfig, role: TLSContext.Role, configFile: String) throws(ConfigError) {
        self.files = files
        self.role = role
        do {
            state = NIOLockedValueBox((try Self.build(files, role: role), Self.stamps(files)))
        } catch {
            throw ConfigError(file: configFile, mark: files.mark, field: files.field, message: error.message)
        }
        warnIfKeyIsExposed()
    }

    /// Logs a warning when the private key file can be read (or written)
    /// by its group or by others (any of mode 0o077): anyone else on the
    /// machine could then impersonate the gateway. OpenSSH and PostgreSQL
    /// refuse such keys; the gateway says so at start, at each reload and
    /// rotation, and goes on (a Kubernetes Secret mounts files 0644 unless
    /// its `defaultMode` says otherwise).
    public func warnIfKeyIsExposed() {
        // PostgreSQL's rule: others never; the group only on a file root
        // owns (a Kubernetes Secret mounted with defaultMode 0440 and an
        // fsGroup: root's file, readable by the pod's group, as intended).
        guard let key = files.key, let info = try? Posix.status(key),
              info.permissions & 0o007 != 0 || (info.permissions & 0o070 != 0 && info.owner != 0) else { return }
        let mode = String(info.permissions & 0o7777, radix: 8)
        Log.warning("TLS private key file is readable by group or others; make it readable by the gateway's user only (chmod 600)", [
            "file": key, "mode": String(repeating: "0", count: max(0, 4 - mode.count)) + mode, "field": files.field,
        ])
    }

    public var current: TLSContext { state.withLockedValue { $0.context } }

    private static func build(_ files: TLSFilesConfig, role: TLSContext.Role) throws(TLSError) -> TLSContext {
        try TLSContext(role: role, certificateChain: files.cert, privateKey: files.key, trustedCAs: files.ca,
                       clientAuth: TLSContext.ClientAuth(rawValue: files.clientAuth) ?? .none)
    }

    /// Modification time and size of each file: what "changed" means.
    private static func stamps(_ files: TLSFilesConfig) -> [String] {
        [files.cert, files.key, files.ca].compactMap { $0 }.map { path in
            guard let info = try? Posix.status(path) else { return "\(path):missing" }
            return "\(path):\(info.modifiedNanos):\(info.size)"
        }
    }

    /// Rebuilds the context when a file changed (or always, with `force`).
    /// Returns true when new material is in use.
    @discardableResult
    public func reloadIfChanged(force: Bool = false) -> Bool {
        let stamps = Self.stamps(files)
        guard force || stamps != state.withLockedValue({ $0.stamps }) else { return false }
        do {
            let context = try Self.build(files, role: role)
            state.withLockedValue { $0 = (context, stamps) }
            GatewayEvents.shared.record(.certificate, .info, "TLS material reloaded", ["field": files.field, "cert": files.cert ?? "-", "ca": files.ca ?? "-"])
            warnIfKeyIsExposed()
            return true
        } catch {
            // Remember the stamps so that one bad write is logged once.
            state.withLockedValue { $0.stamps = stamps }
            GatewayEvents.shared.record(.certificate, .error, "TLS material not reloaded; the previous certificates stay in use",
                                        ["field": files.field, "error": error.message])
            return false
        }
    }
}
