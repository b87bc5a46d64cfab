import Logging

/// The gateway's logs: swift-log with `JSONLogHandler`, one JSON object per
/// line on stderr. Call sites pass fields, never formatted strings, so that
/// a log pipeline can index them.
public enum Log {
    public enum Level: Int, Sendable { case debug, info, warning, error
        public var swiftLog: Logger.Level { [.debug, .info, .warning, .error][rawValue] }
    }

    /// Set once at startup (`--log-level`), before any loop runs.
    nonisolated(unsafe) public static var minimumLevel: Level = .info {
        didSet { logger.logLevel = minimumLevel.swiftLog }
    }

    /// The logger every part of the gateway writes to. `nonisolated(unsafe)`:
    /// only `minimumLevel` changes it, once, before the event loops start.
    nonisolated(unsafe) public static var logger: Logger = {
        var logger = Logger(label: "meshgate") { JSONLogHandler(label: $0) }
        logger.logLevel = .info
        return logger
    }()

    public static func debug(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.debug, message, fields) }
    public static func info(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.info, message, fields) }
    public static func warning(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.warning, message, fields) }
    public static func error(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.error, message, fields) }

    public static func write(_ level: Level, _ message: String, _ fields: KeyValuePairs<String, String>) {
        guard level.rawValue >= minimumLevel.rawValue else { return }
        var metadata: Logger.Metadata = [:]
        for (k, v) in fields { metadata[k] = .string(v) }
        logger.log(level: level.swiftLog, "\(message)", metadata: metadata)
    }

}
