import Testing
@testable import GatewayHost
@testable import MeshgateConfig
@testable import MeshgateControl

/// What `/reload` refuses as restart-only (`Gateway.restartOnlyDifference`),
/// without a running gateway: the keys the configuration reference marks
/// restart-only, and a listener's settings fixed at start.
@Suite struct ReloadRestartOnlyTests {
    private let yaml = """
        admin:
          address: 127.0.0.1:9901
        listeners:
          - name: public
            address: 127.0.0.1:50051
            max_connections: 100
            routes: [{ match: { service: a.B }, cluster: c }]
        clusters: [{ name: c, endpoints: [{ address: 127.0.0.1:1 }] }]
        """

    private func base() throws -> GatewayConfig { try ConfigLoader.parse(yaml, file: "reload.yaml") }

    @Test func theSameConfigReloads() throws {
        #expect(Gateway.restartOnlyDifference(try base(), try base()) == nil)
    }

    @Test func adminAllowedHostsNeedsARestart() throws {
        let old = try base()
        var new = old
        new.admin?.allowedHosts = ["gateway.internal"]
        #expect(Gateway.restartOnlyDifference(old, new)?.contains("admin.allowed_hosts") == true)
        // The same names again, in any order, are no change.
        var two = new
        two.admin?.allowedHosts = ["gateway.internal", "ops.internal"]
        var reordered = two
        reordered.admin?.allowedHosts = ["ops.internal", "gateway.internal"]
        #expect(Gateway.restartOnlyDifference(two, reordered) == nil)
        #expect(Gateway.restartOnlyDifference(new, two)?.contains("admin.allowed_hosts") == true)
    }

    @Test func aListenersMaxConnectionsNeedsARestart() throws {
        let old = try base()
        var lowered = old
        lowered.listeners[0].maxConnections = 1
        #expect(Gateway.restartOnlyDifference(old, lowered)?.contains("max_connections") == true)
        // Dropping the key (back to the default) is a change too.
        var unset = old
        unset.listeners[0].maxConnections = nil
        #expect(Gateway.restartOnlyDifference(old, unset)?.contains("max_connections") == true)
    }

    @Test func aReloadableListenerSettingStillReloads() throws {
        let old = try base()
        var new = old
        new.listeners[0].routes[0].timeout = .seconds(7)
        #expect(Gateway.restartOnlyDifference(old, new) == nil)
    }
}
