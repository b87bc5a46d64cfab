/// An error that stops the gateway from starting or running, with a code a
/// script can branch on and a message a person can act on.
public struct GatewayError: Error, Sendable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        public let name: String
        public static let invalidConfig = Code(name: "invalid-config")
        public static let listenFailed = Code(name: "listen-failed")
        public static let internalError = Code(name: "internal")
        public var description: String { name }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
