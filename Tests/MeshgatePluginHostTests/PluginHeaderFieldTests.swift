import FilterABI
import MeshgateHTTP2
import Testing
@testable import MeshgatePluginHost

@Suite struct PluginHeaderFieldTests {
    func add(_ name: String, _ value: String, to list: inout HTTP2HeaderList, replacing: Bool = false) -> Bool {
        var name = name, value = value
        return name.withUTF8 { n in
            value.withUTF8 { v in
                PluginHeaderField.append(mg_str(ptr: UnsafeRawPointer(n.baseAddress)?.assumingMemoryBound(to: CChar.self), len: n.count),
                                         mg_str(ptr: UnsafeRawPointer(v.baseAddress)?.assumingMemoryBound(to: CChar.self), len: v.count),
                                         to: &list, replacing: replacing)
            }
        }
    }

    @Test func validFieldsAreAppendedLowerCased() {
        var list = HTTP2HeaderList()
        #expect(add("X-Trace.Id_2", "a\tb c", to: &list))
        #expect(add("x-empty", "", to: &list))
        #expect(Array(list).map(\.name) == ["x-trace.id_2", "x-empty"])
        #expect(list["x-trace.id_2"] == "a\tb c")
        let long = "x-" + String(repeating: "A", count: 2_000)
        #expect(add(long, "v", to: &list), "no length cap beyond HTTP/2's own")
        #expect(list[long.lowercased()] == "v")
    }

    @Test func invalidFieldsAreRefusedAndNothingIsAppended() {
        var list = HTTP2HeaderList()
        for name in ["", ":path", "connection", "Connection", "te", "host", "keep-alive", "x y", "x:y", "é"] {
            #expect(!add(name, "v", to: &list), "\(name)")
        }
        for value in ["a\r\nb", "a\0", "\u{7f}", "line\n"] {
            #expect(!add("x-ok", value, to: &list), "\(value.debugDescription)")
        }
        #expect(list.isEmpty)
        #expect(add("tee", "v", to: &list), "a longer name than a forbidden one")
    }

    @Test func replacingDropsTheEarlierFieldOfThatName() {
        var list: HTTP2HeaderList = [("traceparent", "old"), ("x-other", "1")]
        #expect(add("TraceParent", "new", to: &list, replacing: true))
        #expect(Array(list).map(\.name) == ["x-other", "traceparent"] && list["traceparent"] == "new")
        #expect(add("x-other", "2", to: &list))
        #expect(list.count == 3, "without replacing, a second field of a name is kept")
    }
}
