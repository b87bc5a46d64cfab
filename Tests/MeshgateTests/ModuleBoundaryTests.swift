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

    private static func swiftFiles(under directory: String) -> [String] {
        let files = FileManager.default.enumerator(atPath: directory)?.compactMap { $0 as? String } ?? []
        return files.filter { $0.hasSuffix(".swift") }.map { directory + "/" + $0 }
    }
}
