import Foundation
import MeshgatePosix
import Testing

/// libc failures become thrown errors that say what failed.
@Suite struct PosixTests {
    let scratch: String = {
        let path = NSTemporaryDirectory() + "meshgate-posix-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    @Test func readingAMissingFileOrADirectoryThrows() throws {
        #expect(throws: PosixError.self) { try Posix.readFile(scratch + "/missing") }
        do {
            _ = try Posix.readFile(scratch)
            Issue.record("a directory read as a file")
        } catch {
            #expect(error.code == EISDIR)
            #expect(error.description.hasPrefix("read \(scratch): "))
        }
    }

    @Test func aNewFileIsWrittenWholeAndNeverOverwritten() throws {
        let path = scratch + "/f"
        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0) }
        try Posix.writeNewFile(path, bytes)
        #expect(try Posix.readFile(path) == bytes)
        #expect(try Posix.status(path).size == 200_000)
        #expect(throws: PosixError.self) { try Posix.writeNewFile(path, [1]) }
        try Posix.rename(path, to: path + "2")
        try Posix.remove(path + "2")
        try Posix.remove(path + "2")  // already gone: no error
    }

    @Test func aPrivateDirectoryRefusesOneOthersCanWrite() throws {
        let path = scratch + "/cache"
        try Posix.privateDirectory(path)
        #expect(try Posix.status(path).permissions == 0o700)
        try Posix.privateDirectory(path)  // exists, still private: fine
        chmod(path, 0o777)
        do {
            try Posix.privateDirectory(path)
            Issue.record("a world-writable cache directory was accepted")
        } catch {
            #expect(error.reason.contains("open to other users"))
        }
    }

    @Test func theWallClockIsNearFoundations() {
        let ours = Double(Posix.wallClockNanos()) / 1e9
        #expect(abs(ours - Date().timeIntervalSince1970) < 1)
    }
}

/// The open-file limit is raised to the hard one at start. (Lowering it
/// here first would starve tests running beside this one of descriptors;
/// `test_admin.py` starts the gateway from a soft limit of 256.)
@Suite struct OpenFileLimitTests {
    @Test func theSoftLimitIsRaisedToTheHardOne() throws {
        let (before, after) = try Posix.raiseOpenFileLimit()
        #expect(after.hard == before.hard)
        #expect(after.soft >= before.soft)
        if before.hard != UInt64.max { #expect(after.soft == before.hard) }
        // Already at the hard limit: nothing to do, the same both times.
        let (again, same) = try Posix.raiseOpenFileLimit()
        #expect(again == same && same == after)
    }
}
