@testable import ConsistentHash
import FilterABI
@testable import PluginKit
import Synchronization
import Testing

/// PluginKit's descriptor builder: what it fills in, that each hook lands
/// in its own `mg_plugin` field, what it refuses, and the entry's checks
/// of the host.
///
/// Serialized: `entry` keeps the host's table in `PluginHost.table`, a
/// process-wide global (as in a plugin image).
@Suite(.serialized) struct PluginDescriptorBuilderTests {
    typealias Builder = PluginDescriptor.Builder

    static let configNew: Builder.ConfigNew = { _, _, _, _ in UnsafeMutableRawPointer(bitPattern: 1) }
    static let lbPick: Builder.LBPick = { _, _, _, _, chosen in
        chosen?.pointee = 7
        return 0
    }

    /// A Sendable `static let` of a descriptor, as plugins keep it: no
    /// `nonisolated(unsafe)` needed.
    static let balancer = PluginDescriptor(name: "test_balancer", version: "9.8.7", kinds: .balancer, abiMinor: 2) { d in
        d.configNew = configNew
        d.lbPick = lbPick
    }

    static func address<F>(_ function: F?) -> UInt? {
        function.map { unsafeBitCast($0, to: UInt.self) }
    }

    @Test func identityFieldsAreFilledIn() throws {
        let pointer = try #require(Self.balancer.pointer)
        let d = pointer.pointee
        #expect(Self.balancer.problem == nil)
        #expect(d.size == UInt32(MemoryLayout<mg_plugin>.size))
        #expect(d.abi_major == UInt32(MG_ABI_MAJOR))
        #expect(d.abi_minor == 2)
        #expect(d.kinds == UInt32(MG_KIND_BALANCER))
        #expect(d.name.map { String(cString: $0) } == "test_balancer")
        #expect(d.version.map { String(cString: $0) } == "9.8.7")
        #expect(Self.address(d.config_new) == Self.address(Self.configNew))
        #expect(Self.address(d.lb_pick) == Self.address(Self.lbPick))
        // Hooks not set are absent ("not implemented").
        #expect(d.config_destroy == nil && d.instance_new == nil && d.instance_destroy == nil)
        #expect(d.call_new == nil && d.call_destroy == nil && d.on_request_headers == nil && d.on_attempt_start == nil)
        #expect(d.on_response_headers == nil && d.on_attempt_done == nil && d.on_call_done == nil && d.lb_update == nil)
        var chosen: UInt32 = 0
        #expect(d.lb_pick?(nil, nil, nil, nil, &chosen) == 0)
        #expect(chosen == 7)
    }

    @Test func kindsAreTheHeadersFlags() {
        #expect(PluginKinds.filter.rawValue == UInt32(MG_KIND_FILTER))
        #expect(PluginKinds.balancer.rawValue == UInt32(MG_KIND_BALANCER))
        #expect(PluginKinds.retry.rawValue == UInt32(MG_KIND_RETRY))
        #expect(PluginKinds.hedge.rawValue == UInt32(MG_KIND_HEDGE))
        #expect(PluginKinds([.filter, .balancer]).rawValue == UInt32(MG_KIND_FILTER | MG_KIND_BALANCER))
    }

    /// Every builder property goes into its own field: hooks of the same C
    /// type (on_attempt_start / on_response_headers, config_destroy /
    /// instance_destroy) must not be swapped.
    @Test func eachHookLandsInItsOwnField() throws {
        var b = Builder(name: "all", version: "1", kinds: [.filter, .balancer], abiMinor: UInt32(MG_ABI_MINOR))
        b.configNew = { _, _, _, _ in UnsafeMutableRawPointer(bitPattern: 1) }
        b.configDestroy = { _ in _ = 1 }
        b.instanceNew = { _, _, _ in UnsafeMutableRawPointer(bitPattern: 2) }
        b.instanceDestroy = { _ in _ = 2 }
        b.callNew = { _, _ in UnsafeMutableRawPointer(bitPattern: 3) }
        b.callDestroy = { _, _ in _ = 3 }
        b.onRequestHeaders = { _, _, _ in MG_CONTINUE }
        b.onAttemptStart = { _, _, _, _ in _ = 4 }
        b.onResponseHeaders = { _, _, _, _ in _ = 5 }
        b.onAttemptDone = { _, _, _, _, _ in _ = 6 }
        b.onCallDone = { _, _, _, _ in _ = 7 }
        b.lbUpdate = { _, _ in _ = 8 }
        b.lbPick = { _, _, _, _, _ in 0 }
        let d = try #require(PluginDescriptor(b).pointer).pointee
        let pairs: [(UInt?, UInt?)] = [
            (Self.address(d.config_new), Self.address(b.configNew)),
            (Self.address(d.config_destroy), Self.address(b.configDestroy)),
            (Self.address(d.instance_new), Self.address(b.instanceNew)),
            (Self.address(d.instance_destroy), Self.address(b.instanceDestroy)),
            (Self.address(d.call_new), Self.address(b.callNew)),
            (Self.address(d.call_destroy), Self.address(b.callDestroy)),
            (Self.address(d.on_request_headers), Self.address(b.onRequestHeaders)),
            (Self.address(d.on_attempt_start), Self.address(b.onAttemptStart)),
            (Self.address(d.on_response_headers), Self.address(b.onResponseHeaders)),
            (Self.address(d.on_attempt_done), Self.address(b.onAttemptDone)),
            (Self.address(d.on_call_done), Self.address(b.onCallDone)),
            (Self.address(d.lb_update), Self.address(b.lbUpdate)),
            (Self.address(d.lb_pick), Self.address(b.lbPick)),
        ]
        for (field, hook) in pairs {
            #expect(field != nil && field == hook)
        }
        // Thirteen distinct functions: a swap would show above.
        #expect(Set(pairs.map { $0.1 }).count == 13)
        #expect(d.kinds == UInt32(MG_KIND_FILTER | MG_KIND_BALANCER))
        #expect(d.abi_minor == UInt32(MG_ABI_MINOR))
    }

    @Test func whatTheHostWouldRefuseIsRefusedHere() {
        func problem(_ kinds: PluginKinds, minor: UInt32 = 0, _ set: (inout Builder) -> Void) -> String? {
            let made = PluginDescriptor(name: "p", version: "1", kinds: kinds, abiMinor: minor, hooks: set)
            #expect((made.pointer == nil) == (made.problem != nil))
            return made.problem
        }
        #expect(problem(.filter) { _ in } == "config_new is required")
        #expect(problem(.balancer) { $0.configNew = Self.configNew } == "a balancer needs lb_pick")
        #expect(problem(.filter) { $0.configNew = Self.configNew; $0.lbPick = Self.lbPick }?.contains("only called on a balancer") == true)
        #expect(problem(.retry) { $0.configNew = Self.configNew; $0.lbUpdate = { _, _ in } }?.contains("only called on a balancer") == true)
        #expect(problem([]) { $0.configNew = Self.configNew } == "kinds is empty")
        #expect(problem(PluginKinds(rawValue: 1 << 9)) { $0.configNew = Self.configNew }?.contains("does not define") == true)
        #expect(problem(.filter, minor: UInt32(MG_ABI_MINOR) + 1) { $0.configNew = Self.configNew }?.contains("newer than the header") == true)
        #expect(problem(.filter, minor: UInt32(MG_ABI_MINOR)) { $0.configNew = Self.configNew } == nil)
        #expect(problem([.filter, .balancer]) { $0.configNew = Self.configNew; $0.lbPick = Self.lbPick; $0.lbUpdate = { _, _ in } } == nil)
    }

    // MARK: entry

    static let logged = Mutex<[String]>([])

    /// A host table that lives as long as the process (PluginHost keeps it).
    static func host(major: UInt32 = UInt32(MG_ABI_MAJOR), minor: UInt32) -> UnsafePointer<mg_host> {
        let table = UnsafeMutablePointer<mg_host>.allocate(capacity: 1)
        table.initialize(to: mg_host())
        table.pointee.size = UInt32(MemoryLayout<mg_host>.size)
        table.pointee.abi_major = major
        table.pointee.abi_minor = minor
        table.pointee.log = { _, plugin, message in
            let text = [plugin, message].map { s in
                String(decoding: UnsafeRawBufferPointer(start: s.ptr, count: s.ptr == nil ? 0 : s.len), as: UTF8.self)
            }
            PluginDescriptorBuilderTests.logged.withLock { $0.append(text.joined(separator: ": ")) }
        }
        return UnsafePointer(table)
    }

    @Test func entryReturnsTheSameImmortalDescriptor() throws {
        let host = Self.host(minor: UInt32(MG_ABI_MINOR))
        let first = try #require(Self.balancer.entry(host))
        #expect(first == Self.balancer.pointer)
        #expect(Self.balancer.entry(host) == first)
        #expect(PluginHost.table == host)
    }

    @Test func entryRefusesAHostThatCannotServeThePlugin() {
        Self.logged.withLock { $0.removeAll() }
        #expect(Self.balancer.entry(nil) == nil)
        #expect(Self.balancer.entry(Self.host(major: UInt32(MG_ABI_MAJOR) + 1, minor: 9)) == nil)
        // The plugin needs 1.2: a 1.1 host lacks what it reads.
        #expect(Self.balancer.entry(Self.host(minor: 1)) == nil)
        #expect(Self.logged.withLock { $0 } == ["test_balancer: needs filter ABI \(MG_ABI_MAJOR).2; this host offers \(MG_ABI_MAJOR).1"])
        #expect(Self.balancer.entry(Self.host(minor: 2)) != nil)
    }

    @Test func anInvalidDescriptorIsRefusedWithItsReason() {
        Self.logged.withLock { $0.removeAll() }
        let invalid = PluginDescriptor(name: "broken", version: "1", kinds: .balancer, abiMinor: 0) { $0.configNew = Self.configNew }
        #expect(invalid.entry(Self.host(minor: UInt32(MG_ABI_MINOR))) == nil)
        #expect(Self.logged.withLock { $0 } == ["broken: invalid descriptor: a balancer needs lb_pick"])
    }

    /// A plugin in the tree, built with the builder, as the host sees it.
    @Test func consistentHashDescriptorIsSound() throws {
        let descriptor = ConsistentHashPlugin.descriptor
        #expect(descriptor.problem == nil)
        let d = try #require(descriptor.pointer).pointee
        #expect(d.name.map { String(cString: $0) } == "consistent_hash")
        #expect(d.kinds == UInt32(MG_KIND_BALANCER) && d.abi_minor == 0)
        #expect(d.config_new != nil && d.lb_pick != nil && d.lb_update != nil && d.instance_destroy != nil)
    }
}
