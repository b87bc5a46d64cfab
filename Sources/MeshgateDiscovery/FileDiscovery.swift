import MeshgatePosix
import MeshgateYAML
import NIOCore
import MeshgateConfig

/// Endpoints from a YAML or JSON file, re-read when it changes (checked
/// every `refresh_interval` by inode, size and modification time). Either a
/// list of entries or a mapping with `endpoints:`; each entry has
/// `address`, optional `weight` and `metadata`:
///
///     endpoints:
///       - address: 10.0.0.7:50051
///         weight: 2
///         metadata: {zone: a}
///
/// Write the file atomically (write a temporary file, then rename it over
/// the old one): a half-written file is a parse error, and a parse error
/// keeps the last good endpoints.
public final class FileDiscovery: DiscoverySource {
    public let config: FileDiscoveryConfig
    private let eventLoop: EventLoop
    private var report: Report?
    private var timer: Scheduled<Void>?
    private var stamp: String?

    public init(config: FileDiscoveryConfig, eventLoop: EventLoop) {
        self.config = config
        self.eventLoop = eventLoop
    }

    public func start(report: @escaping Report) {
        self.report = report
        check()
        scheduleNext()
    }

    private func scheduleNext() {
        guard report != nil else { return }
        timer = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(config.refreshInterval.nanosecondsClamped)) {
            self.check()
            self.scheduleNext()
        }
    }

    public func stop() {
        report = nil
        timer?.cancel()
    }

    private func check() {
        guard let report else { return }
        let now: String
        do {
            let info = try Posix.status(config.path)
            now = "\(info.inode):\(info.size):\(info.modifiedNanos):\(info.changedNanos)"
        } catch {
            now = "missing:\(error.code)"
        }
        guard now != stamp else { return }
        stamp = now
        report(Self.read(config.path))
    }

    public static func read(_ path: String) -> Result<[EndpointConfig], DiscoveryFailure> {
        let bytes: [UInt8]
        do {
            bytes = try Posix.readFile(path, maxBytes: InputLimits.discoveryFile.maxBytes)
        } catch {
            return .failure(DiscoveryFailure("\(path): cannot read the file: \(error.reason)"))
        }
        let root: YAMLNode
        do {
            root = try YAMLParser.parse(String(decoding: bytes, as: UTF8.self), limits: InputLimits.discoveryFile)
        } catch {
            return .failure(DiscoveryFailure("\(path):\(error.mark): \(error.explanation)"))
        }
        do throws(ConfigError) {
            var list = root
            if case .mapping = root {
                let top = try YAMLFieldReader(root, file: path, path: "", allowed: ["endpoints"])
                guard let node = top.node("endpoints") else { return .success([]) }
                list = node
            }
            if case .null = list { return .success([]) }
            guard case .sequence(let items, _) = list else {
                return .failure(DiscoveryFailure("\(path):\(list.mark): expected a list of endpoints, found \(list.kindName)"))
            }
            let nodes = items.enumerated().map { (node: $0.element, path: "endpoints[\($0.offset)]") }
            return .success(try ConfigLoader.parseEndpoints(nodes, file: path))
        } catch {
            return .failure(DiscoveryFailure("\(error)"))
        }
    }
}
