import ArgumentParser
import GatewayHost
import MeshgatePosix
import MeshgateYAML
import MeshgateConfig
import MeshgateSupport
import MeshgateControl
import MeshgatePluginHost

@main
struct Meshgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meshgate",
        abstract: "A gRPC service-mesh gateway.",
        version: MeshgateVersion.text,
        subcommands: [Run.self, Validate.self, Convert.self, Status.self, Reload.self, PluginCommand.self, Register.self, Probe.self],
        defaultSubcommand: Run.self)
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path of the YAML config.")
    var config: String = "config/mesh.yaml"
}

extension ConfigOption {
    /// Loads the config or exits 2 with the located error on stderr.
    func load() -> GatewayConfig {
        do {
            return try ConfigLoader.load(file: config)
        } catch {
            printError("meshgate: invalid config: \(error)")
            Posix.exit(2)
        }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a config without starting the gateway.")

    @OptionGroup var options: ConfigOption

    func run() {
        let config = options.load()
        let plugins: FilterChains
        do {
            _ = try TLSMaterial.load(config)
            plugins = try FilterChains.load(config, host: DataPathHostFunctions.table)
        } catch {
            printError("meshgate: invalid config: \(config.located(error))")
            Posix.exit(2)
        }
        defer { plugins.destroy() }
        let routes = config.listeners.reduce(0) { $0 + $1.routes.count }
        let names = Set(plugins.handles.map { "\($0.image.name) \($0.image.version)" }).sorted().joined(separator: ", ")
        print("\(options.config): OK (\(config.listeners.count) listener(s), \(routes) route(s), \(config.clusters.count) cluster(s); plugins: \(names))")
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start the gateway.")

    @OptionGroup var options: ConfigOption

    @Option(name: .long, help: "Log level: debug, info, warning, error.")
    var logLevel: String = "info"

    func run() async throws {
        MallocTuning.applyByReexecuting()
        switch logLevel {
        case "debug": Log.minimumLevel = .debug
        case "warning": Log.minimumLevel = .warning
        case "error": Log.minimumLevel = .error
        default: Log.minimumLevel = .info
        }
        // What glibc read at start (/proc/PID/environ may show less: glibc
        // cuts the variable at its first ':' while parsing it).
        Log.info("memory allocator", ["GLIBC_TUNABLES": Posix.environment("GLIBC_TUNABLES") ?? "(unset)"])
        let config = options.load()
        do {
            let gateway = try Gateway(config: config)
            try await gateway.start()
            Log.info("meshgate started", ["config": options.config])
            await gateway.runUntilSignalled()
        } catch let error as GatewayError {
            printError("meshgate: \(error.message)")
            Posix.exit(1)
        } catch let error as ConfigError {
            printError("meshgate: invalid config: \(config.located(error))")
            Posix.exit(2)
        }
    }
}

func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { try? Posix.writeAll(Posix.standardError, UnsafeRawBufferPointer($0)) }
}

/// `meshgate convert`: the config in Meshgate's native form, as YAML. A
/// config in the product description's form comes out translated (what
/// `run` would serve); a native one comes out as the loader reads it.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a config (native or in the product description's form) in Meshgate's native form.")

    @OptionGroup var options: ConfigOption

    func run() {
        let document: YAMLNode
        do {
            document = try ConfigLoader.nativeDocument(file: options.config)
            // Only a config the gateway would accept is printed.
            _ = try ConfigLoader.load(file: options.config)
        } catch {
            printError("meshgate: invalid config: \(error)")
            Posix.exit(2)
        }
        print("# The native form of \(options.config) (meshgate convert)")
        print(document.yamlText, terminator: "")
    }
}
