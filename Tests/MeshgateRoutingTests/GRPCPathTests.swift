import Testing
@testable import MeshgateRouting

@Suite struct GRPCPathTests {
    @Test func splitKeepsServiceAndMethod() {
        #expect(GRPCPath.serviceAndMethod("/pkg.Service/Method") == ("pkg.Service", "Method"))
        #expect(GRPCPath.serviceAndMethod("/odd") == ("/odd", ""))
        #expect(GRPCPath.serviceAndMethod("/a/b/c") == ("/a/b/c", ""))
        #expect(GRPCPath.serviceAndMethod("//b") == ("//b", ""))
    }
}
