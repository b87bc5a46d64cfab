import Testing
@testable import GatewayHost
@testable import MeshgateHTTP2

@Suite struct HTTP2HeaderListTests {
    let request: HTTP2HeaderList = [
        (":method", "POST"), (":path", "/mesh.v1.MeshService/Process"), ("content-type", "application/grpc+proto"),
        ("te", "trailers"), ("x-empty", ""), ("x-twice", "a"), ("x-twice", "b"),
    ]

    @Test func fieldsComeBackInOrderAsStringsAndAsBytes() {
        #expect(request.count == 7)
        #expect(request.map(\.name) == [":method", ":path", "content-type", "te", "x-empty", "x-twice", "x-twice"])
        #expect(request.map(\.value) == ["POST", "/mesh.v1.MeshService/Process", "application/grpc+proto", "trailers", "", "a", "b"])
        var seen: [String] = []
        request.forEachField { name, value in
            seen.append(String(decoding: name, as: UTF8.self) + "=" + String(decoding: value, as: UTF8.self))
            return seen.count < 3
        }
        #expect(seen == [":method=POST", ":path=/mesh.v1.MeshService/Process", "content-type=application/grpc+proto"])
    }

    @Test func lookupsFindTheFirstValueWithoutMakingStrings() {
        #expect(request[":path"] == "/mesh.v1.MeshService/Process")
        #expect(request["x-twice"] == "a")
        #expect(request["x-empty"] == "")
        #expect(request["x-missing"] == nil)
        #expect(request.contains("te") && !request.contains("t") && !request.contains("tee"))
        #expect(request.value(of: ":method", equals: "POST"))
        #expect(!request.value(of: ":method", equals: "POS"))
        #expect(request.valueHasPrefix("content-type", "application/grpc"))
        #expect(!request.valueHasPrefix("content-type", "application/grpc+proto+json"))
        #expect(!request.valueHasPrefix("x-missing", ""))
        #expect(request.withValue(of: ":path") { $0.count } == 28)
    }

    @Test func editingKeepsTheOtherFieldsInOrder() {
        var list = request
        list.removeAll(named: "x-twice")
        #expect(list.count == 5 && !list.contains("x-twice"))
        #expect(request.count == 7, "the original is a separate value")
        var bytesAppended = HTTP2HeaderList()
        "x-b".utf8CString.withUnsafeBytes { name in
            "vv".utf8CString.withUnsafeBytes { value in
                bytesAppended.append(name: UnsafeRawBufferPointer(rebasing: name.dropLast()),
                                     value: UnsafeRawBufferPointer(rebasing: value.dropLast()))
            }
        }
        list.append(contentsOf: bytesAppended)
        #expect(list.map(\.name).last == "x-b" && list["x-b"] == "vv")
        #expect(bytesAppended == [("x-b", "vv")])
        list.removeAll(keepingCapacity: true)
        #expect(list.isEmpty && list.count == 0 && list[":path"] == nil)
        #expect(HTTP2HeaderList([("a", "1")]) != HTTP2HeaderList([("a", "2")]))
    }

    @Test func theUpstreamHeadDropsHopByHopAndGatewayFieldsAndReplacesTheScheme() {
        func treatment(_ name: String) -> UpstreamRequestField.Treatment {
            var name = name
            return name.withUTF8 { UpstreamRequestField.treatment(of: UnsafeRawBufferPointer($0)) }
        }
        for dropped in ["grpc-timeout", "grpc-previous-rpc-attempts", "connection", "keep-alive", "proxy-connection",
                        "transfer-encoding", "upgrade"] {
            #expect(treatment(dropped) == .drop, "\(dropped)")
        }
        #expect(treatment(":scheme") == .scheme)
        // Same lengths as the dropped ones, other bytes.
        for passed in ["grpc-timeouts", "grpc-timeou", "grpc-timeoux", "connectiom", "keep-alivf", ":method", "upgradE",
                       "te", "x-api-key", ""] {
            #expect(treatment(passed) == .pass, "\(passed)")
        }
    }
}

/// The storage: copied on write like an Array's, and let go instead of
/// copied when a shared list is emptied.
@Suite struct HTTP2HeaderListStorageTests {
    @Test func aCopyIsChangedWithoutChangingTheOriginal() {
        var original: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]
        var copy = original
        #expect(!original.isUniquelyReferenced() && !copy.isUniquelyReferenced())
        copy.append("grpc-status", "0")
        #expect(original.count == 2 && original["grpc-status"] == nil)
        #expect(copy.count == 3 && copy["grpc-status"] == "0" && copy["content-type"] == "application/grpc")
        #expect(original.isUniquelyReferenced() && copy.isUniquelyReferenced())
        original.append(contentsOf: original)
        #expect(Array(original).map(\.name) == [":status", "content-type", ":status", "content-type"])
    }

    @Test func emptyingKeepsTheStorageOnlyWhenNothingElseHoldsIt() {
        var list: HTTP2HeaderList = [("grpc-status", "0"), ("grpc-message", "fine")]
        let capacity = list.storageBytes
        #expect(capacity >= 256)
        list.removeAll(keepingCapacity: true)
        #expect(list.isEmpty && list.storageBytes == capacity, "unshared: kept for the next block")
        list.append("grpc-status", "14")
        let held = list
        list.removeAll(keepingCapacity: true)
        #expect(list.isEmpty && list.storageBytes == 0, "shared: let go, not copied")
        #expect(held["grpc-status"] == "14" && held.count == 1, "the holder's fields are untouched")
        list.append("a", "b")
        #expect(list.count == 1 && list["a"] == "b")
    }

    @Test func largeFieldsGrowTheStorageAndKeepEveryByte() {
        var list = HTTP2HeaderList()
        let big = String(repeating: "v", count: 70_000)
        for i in 0..<5 { list.append("x-field-\(i)", big) }
        #expect(list.count == 5 && list.storageBytes >= 5 * (70_000 + 8 + 9))
        #expect(Array(list).allSatisfy { $0.value == big })
        var equal = HTTP2HeaderList()
        equal.append(contentsOf: list)
        #expect(equal == list)
        equal.append("x", "y")
        #expect(equal != list)
    }
}
