/// What waits in an `EndpointPool` for a connection: a call's attempt, or
/// a shadow (mirrored) copy of a call.
public protocol UpstreamPoolWaiter: AnyObject {
    /// A connection with room for one more stream.
    func attach(_ connection: UpstreamConnection)
    /// The endpoint could not be connected to; nothing was sent.
    func connectFailed(on endpoint: EndpointPool, error: String)
}
