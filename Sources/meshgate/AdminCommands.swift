import ArgumentParser
import GatewayHost
import MeshgatePosix
import MeshgateConfig
import MeshgateSupport
import MeshgatePluginHost

/// Where a running gateway's admin API is: `--admin HOST:PORT`, else the
/// `admin.address` of `--config`, else 127.0.0.1:9901.
struct AdminAddressOptions: ParsableArguments {
    @Option(help: "The gateway's admin address, HOST:PORT (default: admin.address of --config, else 127.0.0.1:9901).")
    var admin: String?

    @Option(help: "A config whose admin.address to use.")
    var config: String?

    func address() throws -> (host: String, port: Int) {
        var text = admin
        if text == nil, let config {
            do {
                text = try ConfigLoader.load(file: config).admin?.address.description
            } catch {
                throw ValidationError("--config: \(error)")
            }
            if text == nil { throw ValidationError("--config: \(config) has no admin address") }
        }
        let spec: SocketAddressSpec
        do {
            spec = try SocketAddressSpec.parse(text ?? "127.0.0.1:9901")
        } catch {
            throw ValidationError("--admin '\(text ?? "")': \(error)")
        }
        return (spec.host, spec.port)
    }
}

/// A tiny blocking HTTP/1.1 client for the admin API (one request, the
/// connection closed by the server after the answer).
enum AdminClient {
    struct Answer {
        var status: Int
        var body: String
    }

    static func request(_ method: String, _ path: String, host: String, port: Int, timeoutMs: Int = 30_000) throws(PosixError) -> Answer {
        let connection = try BlockingTCPConnection(host: host, port: port, timeoutMs: timeoutMs)
        let request = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        try connection.send(Array(request.utf8))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = try connection.receive(into: &buffer)
            if n == 0 { break }
            received += buffer[..<n]
            if let answer = complete(received) { return answer }
        }
        return complete(received) ?? Answer(status: 0, body: String(decoding: received, as: UTF8.self))
    }

    /// The answer once its head and `content-length` bytes of body are in.
    private static func complete(_ bytes: [UInt8]) -> Answer? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let head = text[..<split.lowerBound].split(separator: "\r\n")
        guard let statusLine = head.first, let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else { return nil }
        let body = String(text[split.upperBound...])
        let length = head.dropFirst().first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: " ")) }
        if let length, body.utf8.count < length { return nil }
        return Answer(status: status, body: body)
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}

/// `meshgate reload`: POST /reload on a running gateway; prints its answer.
struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reload a running gateway's config (POST /reload on its admin address) and print the result.",
        discussion: "Exit codes: 0 reloaded, 1 the gateway refused the new config (the running one stays), 2 no answer from the admin address.")

    @OptionGroup var target: AdminAddressOptions

    func run() throws {
        let (host, port) = try target.address()
        let answer: AdminClient.Answer
        do {
            answer = try AdminClient.request("POST", "/reload", host: host, port: port)
        } catch {
            printError("meshgate reload: no answer from \(host):\(port): \(error.reason)")
            throw ExitCode(2)
        }
        let message = answer.body.trimmingCharacters(in: "\n")
        switch answer.status {
        case 200:
            print("reloaded: \(message)")
        default:
            printError("meshgate reload: refused (HTTP \(answer.status)): \(message)")
            throw ExitCode(1)
        }
    }
}

/// `meshgate plugin inspect FILE`.
struct PluginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin", abstract: "Work with filter plugins.", subcommands: [Inspect.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a plugin as the gateway does and describe it; with --config, say whether it accepts that config.",
            discussion: "Exit codes: 0 loaded (and the config, if given, accepted), 1 the plugin refused the config, 2 the file cannot load as a plugin (the reason names the path and the ABI version).")

        @Argument(help: "The plugin's shared library (.so).") var file: String
        @Option(help: "A filter config, as JSON (what a route's `config:` becomes), e.g. '{\"max_attempts\": 3}'.") var config: String?

        func run() throws {
            let inspection: PluginInspection
            do {
                inspection = try PluginInspection.inspect(path: file, configJSON: config.map { $0.isEmpty ? "{}" : $0 }, host: DataPathHostFunctions.table)
            } catch {
                printError("meshgate plugin inspect: \(error)")
                throw ExitCode(2)
            }
            print("""
                plugin:   \(inspection.name) \(inspection.version)
                file:     \(inspection.path)
                sha256:   \(inspection.sha256)
                kinds:    \(inspection.kinds.joined(separator: ", "))
                ABI:      needs \(inspection.abi); this host offers \(MeshgateVersion.abiMajor).\(MeshgateVersion.abiMinor)
                """)
            switch inspection.configAccepted {
            case nil: break
            case true?: print("config:   accepted")
            case false?:
                print("config:   refused: \(inspection.configMessage ?? "")")
                throw ExitCode(1)
            }
        }
    }
}
