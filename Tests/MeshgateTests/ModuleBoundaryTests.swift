import Foundation
import Testing

/// The architecture's boundaries, checked on the source tree: each C
/// library is reached through its one wrapper module (imported there with
/// `internal import`, so none of its types leak), libc only through
/// MeshgatePosix, and Foundation (which re-exports libc) only where it is
/// needed for JSON and threads outside the gateway.
@Suite struct ModuleBoundaryTests {
    /// The checkout's root, from this file's path.
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/MeshgateTests/ModuleBoundaryTests.swift
        return parts.joined(separator: "/")
    }()

    /// Every Swift file under Sources/ and Plugins/, as (path from the root, imported modules with their access).
    static let imports: [(path: String, imports: [(module: String, line: String)])] = {
        var result: [(String, [(String, String)])] = []
        for top in ["Sources", "Plugins"] {
            for path in swiftFiles(under: root + "/" + top) {
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
                var found: [(String, String)] = []
                for line in text.split(separator: "\n") {
                    let words = line.split(separator: " ")
                    guard let i = words.firstIndex(of: "import"), i + 1 < words.count,
                          words[..<i].allSatisfy({ ["internal", "public", "package", "private", "fileprivate", "@_exported", "@preconcurrency"].contains($0) })
                    else { continue }
                    found.append((String(words[i + 1]), String(line)))
                }
                result.append((String(path.dropFirst(root.count + 1)), found))
            }
        }
        return result
    }()

    @Test func eachCLibraryIsImportedOnlyByItsWrapper() {
        let wrappers = ["CNGHTTP2": "Sources/MeshgateHTTP2/", "CFreeListAllocator": "Sources/MeshgateHTTP2/", "COpenSSL": "Sources/MeshgateTLS/", "CYAML": "Sources/MeshgateYAML/"]
        #expect(Self.imports.count > 50, "the source tree was found")
        for (path, imports) in Self.imports {
            for (module, line) in imports {
                guard let home = wrappers[module] else { continue }
                #expect(path.hasPrefix(home), "\(path) imports \(module): only \(home) may")
                #expect(line.hasPrefix("internal import "), "\(path): \(module) must be an `internal import` (\(line))")
            }
        }
    }

    @Test func libcIsImportedOnlyByMeshgatePosix() {
        for (path, imports) in Self.imports where !path.hasPrefix("Sources/MeshgatePosix/") {
            for (module, _) in imports where ["Glibc", "Musl", "Darwin", "WinSDK"].contains(module) {
                Issue.record("\(path) imports \(module): libc calls go through MeshgatePosix")
            }
        }
    }

    @Test func foundationStaysOutOfTheGateway() {
        let allowed = [
            "Plugins/PluginKit/PluginConfig.swift",  // JSONSerialization for plugin configs
            "Plugins/Tracing/SpanExporter.swift",    // the exporter's thread and condition
            "Sources/MeshSample/", "Sources/MeshProto/Generated/",  // the sample service, generated code
        ]
        for (path, imports) in Self.imports where !allowed.contains(where: { path.hasPrefix($0) }) {
            for (module, _) in imports where module == "Foundation" || module == "FoundationEssentials" {
                Issue.record("\(path) imports \(module), which brings libc along: use MeshgatePosix or the standard library")
            }
        }
    }

    /// The module graph of docs/architecture.md: each module's row lists
    /// the modules of this package it may import.
    static let documentedGraph: [String: Set<String>] = {
        guard let text = try? String(contentsOfFile: root + "/docs/architecture.md", encoding: .utf8),
              let begin = text.range(of: "<!-- modules:begin"), let end = text.range(of: "<!-- modules:end -->")
        else { return [:] }
        var graph: [String: Set<String>] = [:]
        for line in text[begin.upperBound..<end.lowerBound].split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4 else { continue }
            let module = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            let allowed = cells[3].split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "` ")) }.filter { !$0.isEmpty }
            graph[module] = Set(allowed)
        }
        return graph
    }()

    /// Each target's declared dependencies in Package.swift (targets and
    /// products by name), read from its text.
    static let declaredDependencies: [String: Set<String>] = {
        guard let text = try? String(contentsOfFile: root + "/Package.swift", encoding: .utf8) else { return [:] }
        var result: [String: Set<String>] = [:]
        let starts = text.ranges(of: /\.(?:target|executableTarget|testTarget|systemLibrary)\(\s*name:\s*"(\w+)"/)
        for (i, start) in starts.enumerated() {
            let block = text[start.lowerBound..<(i + 1 < starts.count ? starts[i + 1].lowerBound : text.endIndex)]
            guard let name = block.firstMatch(of: /name:\s*"(\w+)"/)?.1 else { continue }
            var names: Set<String> = []
            if let deps = block.range(of: "dependencies: [") {
                var depth = 1
                var index = deps.upperBound
                while index < block.endIndex, depth > 0 {
                    if block[index] == "[" { depth += 1 } else if block[index] == "]" { depth -= 1 }
                    index = block.index(after: index)
                }
                for match in block[deps.upperBound..<index].matches(of: /"([\w-]+)"/) { names.insert(String(match.1)) }
            }
            result[String(name)] = names
        }
        return result
    }()

    /// The module a source file belongs to (its folder under Sources/).
    private static func module(of path: String) -> String? {
        let parts = path.split(separator: "/")
        return parts.count > 2 && parts[0] == "Sources" ? String(parts[1]) : nil
    }

    @Test func everyModuleImportsOnlyWhatTheArchitectureAllows() {
        let graph = Self.documentedGraph
        #expect(graph.count > 20, "docs/architecture.md's module table was found")
        for (path, imports) in Self.imports {
            guard let module = Self.module(of: path) else { continue }
            guard let allowed = graph[module] else {
                Issue.record("\(path): module \(module) has no row in docs/architecture.md's module table")
                continue
            }
            for (imported, _) in imports where graph[imported] != nil && !allowed.contains(imported) {
                Issue.record("\(path) imports \(imported): docs/architecture.md does not let \(module) depend on it")
            }
        }
    }

    @Test func theDocumentedGraphHasNoCycleAndNamesOnlyRealModules() {
        let graph = Self.documentedGraph
        for (module, allowed) in graph {
            for other in allowed where graph[other] == nil {
                Issue.record("docs/architecture.md: \(module) may import \(other), which has no row")
            }
        }
        // Depth-first search; a module met again while on the path is a cycle.
        var state: [String: Int] = [:]  // 1: on the path, 2: done
        func visit(_ module: String, _ path: [String]) {
            if state[module] == 2 { return }
            if state[module] == 1 {
                Issue.record("docs/architecture.md: cycle \((path + [module]).joined(separator: " -> "))")
                return
            }
            state[module] = 1
            for next in (graph[module] ?? []).sorted() { visit(next, path + [module]) }
            state[module] = 2
        }
        for module in graph.keys.sorted() { visit(module, []) }
    }

    @Test func everyImportIsADeclaredDependency() {
        // SwiftPM lets a module import another it does not declare when the
        // build happens to make it first: the graph must not lean on that.
        let declared = Self.declaredDependencies
        #expect(declared["GatewayHost"]?.contains("MeshgateCallCore") == true, "Package.swift's targets were read")
        for (path, imports) in Self.imports {
            guard let module = Self.module(of: path), let dependencies = declared[module] else { continue }
            for (imported, _) in imports where declared[imported] != nil && !dependencies.contains(imported) {
                Issue.record("\(path) imports \(imported), which Package.swift does not list among \(module)'s dependencies")
            }
        }
    }

    /// The modules the data path calls into per call or per event. Their
    /// API is `public`, not `package`: Swift 6.3 neither inlines nor
    /// specializes a `package` declaration in another module, even an
    /// `@inlinable` one, and cross-module optimization serializes only
    /// public ones (measured: `package` here cost 18 retains per RPC, an
    /// unspecialized generic call per event; `bench/run.sh` counts them).
    static let dataPathModules = ["MeshgateCallCore", "MeshgateConfig", "MeshgateSupport", "MeshgateRouting",
                                  "MeshgateDiscovery", "MeshgateUpstream", "MeshgatePluginHost"]

    @Test func theDataPathsModulesDeclareNoPackageAPI() throws {
        var checked = 0
        for module in Self.dataPathModules {
            for path in Self.swiftFiles(under: Self.root + "/Sources/" + module) {
                let text = try String(contentsOfFile: path, encoding: .utf8)
                checked += 1
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                    if code.firstMatch(of: /(^|[\s(@])package\s+(private\(set\)\s+)?(func|var|let|init|struct|enum|final|class|protocol|typealias|static|subscript|mutating|extension|init\()/) != nil {
                        Issue.record("\(path.dropFirst(Self.root.count + 1)):\(number + 1): `package` API in \(module), which the data path calls: make it public (see dataPathModules)")
                    }
                }
            }
        }
        #expect(checked >= Self.dataPathModules.count, "the modules' sources were found")
    }

    private static func swiftFiles(under directory: String) -> [String] {
        let files = FileManager.default.enumerator(atPath: directory)?.compactMap { $0 as? String } ?? []
        return files.filter { $0.hasSuffix(".swift") }.map { directory + "/" + $0 }
    }
}
