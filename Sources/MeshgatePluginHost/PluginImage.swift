import FilterABI
import MeshgatePosix
import MeshgateTLS
import NIOConcurrencyHelpers

/// A plugin shared library, loaded and checked. The one place Meshgate calls
/// `dlopen`/`dlsym`.
///
/// The file is first copied to a private, content-addressed path
/// (`<cache>/<sha256>-<name>`): `dlopen` of a path it already loaded returns
/// the old image even if a new file replaced it, so a changed plugin must
/// load from a new path. Images are opened with RTLD_NODELETE and never
/// closed (unmapping a Swift image crashes the host later).
public final class PluginImage: @unchecked Sendable {
    // @unchecked Sendable: every field is immutable after init; the
    // descriptor copy's pointers point at the plugin's static storage.

    public let path: String
    public let loadedPath: String
    public let sha256: String
    public let name: String
    public let version: String
    public let abiMajor: UInt32
    public let abiMinor: UInt32
    public let kinds: UInt32
    /// The plugin's descriptor as loaded: its hooks, the fields beyond the
    /// size it declared zeroed (see `copyOfDescriptor`).
    public let hooks: mg_plugin

    /// Everything that can go wrong while loading, said with the path.
    public struct LoadError: Error, CustomStringConvertible {
        public let path: String
        public let message: String
        public var description: String { "plugin \(path): \(message)" }
    }

    /// Loads (or finds, when the same content is already loaded) the image.
    public static func load(path: String, cacheDirectory: String, host: PluginHostTable) throws(LoadError) -> PluginImage {
        let bytes: [UInt8]
        do {
            bytes = try Posix.readFile(path)
        } catch {
            throw LoadError(path: path, message: "cannot read the file: \(error.reason)")
        }
        let digest = SHA256Digest.hex(of: bytes)
        if let loaded = PluginImageCache.shared.image(forDigest: digest) { return loaded }

        let base = path.split(separator: "/").last.map(String.init) ?? "plugin.so"
        let privatePath = "\(cacheDirectory)/\(digest)-\(base)"
        do {
            // A private directory: nobody else may plant a copy there. A
            // copy already there is used only when its content still hashes
            // to its name.
            try Posix.privateDirectory(cacheDirectory)
            if (try? Posix.readFile(privatePath)).map(SHA256Digest.hex(of:)) != digest {
                let temporary = privatePath + ".tmp\(Posix.processID)"
                try Posix.remove(temporary)
                try Posix.writeNewFile(temporary, bytes)
                try Posix.rename(temporary, to: privatePath)
            }
        } catch {
            throw LoadError(path: path, message: "cannot keep its private copy \(privatePath): \(error)")
        }
        let handle: UnsafeMutableRawPointer
        do {
            handle = try Posix.openSharedObject(privatePath)
        } catch {
            throw LoadError(path: path, message: "not a loadable shared object: \(error.reason)")
        }
        guard let symbol = Posix.symbol(MG_PLUGIN_ENTRY_V1, in: handle) else {
            throw LoadError(path: path, message: "missing the entry symbol \(MG_PLUGIN_ENTRY_V1) (is it built against meshgate_filter.h ABI v\(MG_ABI_MAJOR)?)")
        }
        let entry = unsafeBitCast(symbol, to: mg_plugin_entry_v1.self)
        guard let descriptor = entry(host.pointer) else {
            throw LoadError(path: path, message: "the plugin refused to load with this host (host ABI \(MG_ABI_MAJOR).\(MG_ABI_MINOR))")
        }
        // Only the bytes the plugin says its descriptor has are read: one
        // built for an older minor may end before today's last field.
        let size = Int(UnsafeRawPointer(descriptor).load(as: UInt32.self))
        guard size >= minimumDescriptorSize else {
            throw LoadError(path: path, message: "its mg_plugin descriptor says it is \(size) bytes, too small for the ABI \(MG_ABI_MAJOR).0 fields up to config_new (\(minimumDescriptorSize))")
        }
        let d = copyOfDescriptor(descriptor, size: size)
        guard d.abi_major == MG_ABI_MAJOR else {
            throw LoadError(path: path, message: "built for filter ABI \(d.abi_major).\(d.abi_minor); this host supports \(MG_ABI_MAJOR).0 to \(MG_ABI_MAJOR).\(MG_ABI_MINOR)")
        }
        guard d.abi_minor <= MG_ABI_MINOR else {
            throw LoadError(path: path, message: "needs filter ABI \(d.abi_major).\(d.abi_minor); this host offers \(MG_ABI_MAJOR).\(MG_ABI_MINOR)")
        }
        guard d.size >= UInt32(MemoryLayout<mg_plugin>.size) || d.abi_minor < MG_ABI_MINOR else {
            throw LoadError(path: path, message: "its mg_plugin descriptor is \(d.size) bytes, smaller than ABI \(MG_ABI_MAJOR).\(MG_ABI_MINOR)'s \(MemoryLayout<mg_plugin>.size)")
        }
        guard let name = d.name.map({ String(cString: $0) }), !name.isEmpty else {
            throw LoadError(path: path, message: "its descriptor has no name")
        }
        guard d.config_new != nil else {
            throw LoadError(path: path, message: "its descriptor has no config_new hook (required)")
        }
        if d.kinds & UInt32(MG_KIND_BALANCER) != 0 && d.lb_pick == nil {
            throw LoadError(path: path, message: "declares MG_KIND_BALANCER but has no lb_pick hook")
        }
        let image = PluginImage(path: path, loadedPath: privatePath, sha256: digest, name: name,
                                version: d.version.map { String(cString: $0) } ?? "",
                                hooks: d)
        PluginImageCache.shared.remember(image)
        return image
    }

    private init(path: String, loadedPath: String, sha256: String, name: String, version: String, hooks: mg_plugin) {
        self.path = path
        self.loadedPath = loadedPath
        self.sha256 = sha256
        self.name = name
        self.version = version
        self.hooks = hooks
        self.abiMajor = hooks.abi_major
        self.abiMinor = hooks.abi_minor
        self.kinds = hooks.kinds
    }

    /// The header fields and config_new: what every minor's descriptor has.
    public static let minimumDescriptorSize = MemoryLayout<mg_plugin>.offset(of: \mg_plugin.config_destroy)!

    /// The first `size` bytes of the plugin's descriptor; the fields past
    /// them (added by later minors) are zero, so their hooks read as absent.
    public static func copyOfDescriptor(_ descriptor: UnsafePointer<mg_plugin>, size: Int) -> mg_plugin {
        var copy = mg_plugin()
        withUnsafeMutableBytes(of: &copy) { destination in
            destination.copyMemory(from: UnsafeRawBufferPointer(start: descriptor, count: min(size, destination.count)))
        }
        return copy
    }

    public var isBalancer: Bool { kinds & UInt32(MG_KIND_BALANCER) != 0 }
    public var isFilter: Bool { kinds & UInt32(MG_KIND_FILTER) != 0 }
    public var isRetry: Bool { kinds & UInt32(MG_KIND_RETRY) != 0 }
    public var schedulesAttempts: Bool { kinds & UInt32(MG_KIND_RETRY | MG_KIND_HEDGE) != 0 }
}

/// Loaded images by content digest: the same bytes load once per process.
public final class PluginImageCache: Sendable {
    public static let shared = PluginImageCache()
    private let images = NIOLockedValueBox<[String: PluginImage]>([:])

    public func image(forDigest digest: String) -> PluginImage? {
        images.withLockedValue { $0[digest] }
    }

    public func remember(_ image: PluginImage) {
        images.withLockedValue { $0[image.sha256] = image }
    }
}
