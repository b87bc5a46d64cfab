/// DNS wire format (RFC 1035), just what discovery needs: a query with one
/// question, and the answer and additional records of a response (A, AAAA,
/// SRV per RFC 2782, CNAME). Every read is bounds-checked: a hostile or
/// broken datagram throws, it never traps.
public enum DNSRecordType: UInt16, Sendable, CustomStringConvertible {
    case a = 1, cname = 5, aaaa = 28, srv = 33

    public var description: String {
        switch self {
        case .a: return "A"
        case .cname: return "CNAME"
        case .aaaa: return "AAAA"
        case .srv: return "SRV"
        }
    }
}

public struct DNSRecord: Sendable, Equatable {
    public enum Data: Sendable, Equatable {
        case a(String)
        case aaaa(String)
        case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)
        case cname(String)
        case other(type: UInt16)
    }

    /// Owner name, without the trailing dot.
    public var name: String
    public var ttl: UInt32
    public var data: Data
}

public struct DNSResponse: Sendable {
    public var id: UInt16
    public var rcode: UInt8
    public var truncated: Bool
    public var answers: [DNSRecord]
    public var additionals: [DNSRecord]
}

public struct DNSMessageError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

public enum DNSMessage {
    /// A recursive (RD) query for `name`, class IN.
    /// With `udpPayload`, an EDNS(0) OPT record (RFC 6891) offers answers
    /// of that many bytes over UDP instead of 512.
    public static func query(id: UInt16, name: String, type: DNSRecordType, udpPayload: UInt16? = nil) throws(DNSMessageError) -> [UInt8] {
        var out: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, udpPayload == nil ? 0 : 1]
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        guard !trimmed.isEmpty, trimmed.utf8.count <= 253 else { throw DNSMessageError(message: "the name is empty or longer than 253 bytes") }
        for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty, bytes.count <= 63 else { throw DNSMessageError(message: "a label is empty or longer than 63 bytes") }
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out += [0, UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xff), 0, 1]
        if let udpPayload {
            // Root owner, type OPT (41), class = payload size, TTL 0 (no
            // extended rcode, version 0, no DO bit), no options.
            out += [0, 0, 41, UInt8(udpPayload >> 8), UInt8(udpPayload & 0xff), 0, 0, 0, 0, 0, 0]
        }
        return out
    }

    public static func parseResponse(_ bytes: [UInt8], expectedID: UInt16?) throws(DNSMessageError) -> DNSResponse {
        var reader = Reader(bytes: bytes)
        let id = try reader.u16()
        let flags = try reader.u16()
        if let expectedID, id != expectedID { throw DNSMessageError(message: "answer id \(id) is not the query's \(expectedID)") }
        guard flags & 0x8000 != 0 else { throw DNSMessageError(message: "not a response (QR bit clear)") }
        let questions = try reader.u16()
        let answerCount = try reader.u16()
        let authorityCount = try reader.u16()
        let additionalCount = try reader.u16()
        for _ in 0..<questions {
            _ = try reader.name()
            try reader.skip(4)
        }
        var answers: [DNSRecord] = []
        for _ in 0..<answerCount {
            if let record = try reader.record() { answers.append(record) }
        }
        for _ in 0..<authorityCount { _ = try reader.record() }
        var additionals: [DNSRecord] = []
        // A truncated response may end early in the additional section.
        for _ in 0..<additionalCount {
            let record: DNSRecord?
            do { record = try reader.record() } catch { break }
            if let record { additionals.append(record) }
        }
        return DNSResponse(id: id, rcode: UInt8(flags & 0x000f), truncated: flags & 0x0200 != 0, answers: answers, additionals: additionals)
    }

    private struct Reader {
        public let bytes: [UInt8]
        public var offset = 0

        public mutating func u8() throws(DNSMessageError) -> UInt8 {
            guard offset < bytes.count else { throw DNSMessageError(message: "the message ends early") }
            defer { offset += 1 }
            return bytes[offset]
        }

        public mutating func u16() throws(DNSMessageError) -> UInt16 {
            UInt16(try u8()) << 8 | UInt16(try u8())
        }

        public mutating func u32() throws(DNSMessageError) -> UInt32 {
            UInt32(try u16()) << 16 | UInt32(try u16())
        }

        public mutating func skip(_ n: Int) throws(DNSMessageError) {
            guard n >= 0, bytes.count - offset >= n else { throw DNSMessageError(message: "the message ends early") }
            offset += n
        }

        /// A possibly compressed name. Pointers must point backwards, which
        /// also rules out loops.
        public mutating func name() throws(DNSMessageError) -> String {
            var labels: [String] = []
            var position = offset
            var jumped = false
            var length = 0
            while true {
                guard position < bytes.count else { throw DNSMessageError(message: "a name runs past the message") }
                let byte = bytes[position]
                if byte == 0 {
                    if !jumped { offset = position + 1 }
                    break
                }
                switch byte & 0xc0 {
                case 0xc0:
                    guard position + 1 < bytes.count else { throw DNSMessageError(message: "a name pointer runs past the message") }
                    let target = Int(byte & 0x3f) << 8 | Int(bytes[position + 1])
                    guard target < position else { throw DNSMessageError(message: "a name pointer does not point backwards") }
                    if !jumped { offset = position + 2 }
                    jumped = true
                    position = target
                case 0x00:
                    let count = Int(byte)
                    guard position + 1 + count <= bytes.count else { throw DNSMessageError(message: "a label runs past the message") }
                    length += count + 1
                    guard length <= 255 else { throw DNSMessageError(message: "a name is longer than 255 bytes") }
                    labels.append(String(decoding: bytes[(position + 1)..<(position + 1 + count)], as: UTF8.self))
                    position += 1 + count
                default:
                    throw DNSMessageError(message: "unknown label type \(byte >> 6)")
                }
            }
            return labels.joined(separator: ".")
        }

        /// One resource record; nil when it is not of class IN.
        public mutating func record() throws(DNSMessageError) -> DNSRecord? {
            let owner = try name()
            let type = try u16()
            let recordClass = try u16()
            let ttl = try u32()
            let length = Int(try u16())
            let start = offset
            try skip(length)
            let end = offset
            guard recordClass == 1 else { return nil }
            offset = start
            defer { offset = end }
            let data: DNSRecord.Data
            switch DNSRecordType(rawValue: type) {
            case .a:
                guard length == 4 else { throw DNSMessageError(message: "an A record of \(length) bytes") }
                data = .a(bytes[start..<end].map(String.init).joined(separator: "."))
            case .aaaa:
                guard length == 16 else { throw DNSMessageError(message: "an AAAA record of \(length) bytes") }
                data = .aaaa(Self.formatIPv6(Array(bytes[start..<end])))
            case .srv:
                guard length >= 7 else { throw DNSMessageError(message: "an SRV record of \(length) bytes") }
                let priority = try u16()
                let weight = try u16()
                let port = try u16()
                let target = try name()
                guard offset <= end else { throw DNSMessageError(message: "an SRV target runs past its record") }
                data = .srv(priority: priority, weight: weight, port: port, target: target)
            case .cname:
                data = .cname(try name())
                guard offset <= end else { throw DNSMessageError(message: "a CNAME target runs past its record") }
            case nil:
                data = .other(type: type)
            }
            return DNSRecord(name: owner, ttl: ttl & 0x7fff_ffff, data: data)
        }

        /// RFC 5952: lowercase hex, the longest run (2+) of zero groups as
        /// "::"; an IPv4-mapped address (::ffff:0:0/96) ends in dotted
        /// decimal (§5), "::ffff:192.0.2.1".
        public static func formatIPv6(_ b: [UInt8]) -> String {
            if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff {
                return "::ffff:\(b[12]).\(b[13]).\(b[14]).\(b[15])"
            }
            let groups = (0..<8).map { UInt16(b[2 * $0]) << 8 | UInt16(b[2 * $0 + 1]) }
            var bestStart = -1, bestLength = 0, runStart = -1
            for i in 0...8 {
                if i < 8, groups[i] == 0 {
                    if runStart < 0 { runStart = i }
                } else if runStart >= 0 {
                    if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                    runStart = -1
                }
            }
            if bestLength < 2 { bestStart = -1 }
            var parts: [String] = []
            var i = 0
            while i < 8 {
                if i == bestStart {
                    parts.append(i == 0 ? ":" : "")
                    i += bestLength
                    if i == 8 { parts.append("") }
                    continue
                }
                parts.append(String(groups[i], radix: 16))
                i += 1
            }
            return parts.joined(separator: ":")
        }
    }
}
