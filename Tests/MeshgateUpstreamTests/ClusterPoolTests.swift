import MeshgateUpstream
import Testing

@Suite struct ClusterPoolTests {
    /// Balancers keep endpoint ids across reloads and loops: they are
    /// FNV-1a of the address, never 0 (0 means "no endpoint" in the ABI).
    @Test func endpointIDsAreFNV1aOfTheAddress() {
        #expect(ClusterPool.endpointID(address: "") == 0xcbf2_9ce4_8422_2325)
        #expect(ClusterPool.endpointID(address: "a") == 0xaf63_dc4c_8601_ec8c)
        #expect(ClusterPool.endpointID(address: "10.0.0.1:50051") == ClusterPool.endpointID(address: "10.0.0.1:50051"))
        #expect(ClusterPool.endpointID(address: "10.0.0.1:50051") != ClusterPool.endpointID(address: "10.0.0.2:50051"))
    }
}
