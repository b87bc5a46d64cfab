/// `host:port` as written in the config: an IPv4 literal, `[IPv6]`, or a host name.
public struct SocketAddressSpec: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.utf8.contains(UInt8(ascii: ":")) ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public enum ParseError: Error, CustomStringConvertible {
        case missingPort, badPort(String), emptyHost

        public var description: String {
            switch self {
            case .missingPort: return "expected HOST:PORT (for example 127.0.0.1:50051 or [::1]:50051)"
            case .badPort(let p): return "port '\(p)' is not a number from 1 to 65535"
            case .emptyHost: return "the host part is empty"
            }
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> SocketAddressSpec {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .missingPort }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .missingPort }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .missingPort }
            host = text[..<colon]
            if host.contains(":") { throw .missingPort }
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw .emptyHost }
        guard let port = Int(portText), (1...65535).contains(port) else { throw .badPort(String(portText)) }
        return SocketAddressSpec(host: String(host), port: port)
    }
}
