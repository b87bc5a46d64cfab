import MeshgatePosix
import Testing

@Suite struct MallocTuningTests {
    @Test func theCacheIsSetUnlessTheOperatorSetItOrTurnedTuningOff() {
        #expect(MallocTuning.tunables(current: nil, tuning: nil) == "glibc.malloc.tcache_count=1024")
        #expect(MallocTuning.tunables(current: "", tuning: nil) == "glibc.malloc.tcache_count=1024")
        #expect(MallocTuning.tunables(current: "glibc.malloc.arena_max=2", tuning: nil)
                == "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=1024")
        #expect(MallocTuning.tunables(current: "glibc.malloc.tcache_count=7", tuning: nil) == nil)
        #expect(MallocTuning.tunables(current: nil, tuning: "off") == nil)
        #expect(MallocTuning.tunables(current: nil, tuning: "on") == "glibc.malloc.tcache_count=1024")
    }
}
