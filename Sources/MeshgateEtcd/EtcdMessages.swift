import ProtoWire

/// The etcd v3 messages Meshgate uses, encoded and decoded by field number
/// as declared in etcd's `api/etcdserverpb/rpc.proto` and
/// `api/mvccpb/kv.proto` (stable since etcd 3.0).
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: [UInt8]
    public var value: [UInt8]
    public var modRevision: Int64
    /// 1 when the put created the key (a deletion resets it): a watch
    /// tells new keys from changed ones by it.
    public var version: Int64
    public var lease: Int64

    public var keyString: String { String(decoding: key, as: UTF8.self) }
    public var valueString: String { String(decoding: value, as: UTF8.self) }

    init(_ bytes: ArraySlice<UInt8>) throws(ProtoDecodeError) {
        key = []
        value = []
        modRevision = 0
        version = 0
        lease = 0
        var reader = ProtoReader(bytes)
        while let (field, v) = try reader.next() {
            switch field {
            case 1: key = Array(v.slice)
            case 3: modRevision = v.int64
            case 4: version = v.int64
            case 5: value = Array(v.slice)
            case 6: lease = v.int64
            default: break
            }
        }
    }
}

/// One page of a Range: the key-values read (at most the request's
/// `limit`), the store revision they were read at, whether keys beyond the
/// limit remain in the range, and how many keys the whole range holds.
public struct EtcdRangePage: Sendable {
    public var kvs: [EtcdKeyValue] = []
    public var revision: Int64 = 0
    public var more = false
    public var count: Int64 = 0
}

/// A Range request over `[key, rangeEnd)`.
public struct EtcdRangeRequest: Sendable, Equatable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    /// At most this many keys (0: no limit).
    public var limit: Int
    /// Read at this store revision (0: the newest), so that the pages of
    /// one listing are one snapshot.
    public var revision: Int64
    /// Keys without their values.
    public var keysOnly: Bool

    public init(key: [UInt8], rangeEnd: [UInt8], limit: Int, revision: Int64 = 0, keysOnly: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.limit = limit
        self.revision = revision
        self.keysOnly = keysOnly
    }

    /// The `rangeEnd` that covers every key starting with `prefix`.
    public static func end(ofPrefix prefix: [UInt8]) -> [UInt8] { EtcdMessages.prefixEnd(prefix) }
}

public struct EtcdWatchEvent: Sendable {
    public enum Kind: Sendable { case put, delete }
    public var kind: Kind
    public var kv: EtcdKeyValue
}

enum EtcdMessages {
    /// `range_end` that makes a range cover every key starting with `prefix`.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]  // every key
    }

    static func rangeRequest(_ request: EtcdRangeRequest) -> ProtoWriter {
        var w = ProtoWriter()
        w.bytes(1, request.key)
        w.bytes(2, request.rangeEnd)
        w.int64(3, Int64(request.limit))
        w.int64(4, request.revision)
        w.bool(8, request.keysOnly)
        return w
    }

    static func putRequest(key: [UInt8], value: [UInt8], lease: Int64) -> ProtoWriter {
        var w = ProtoWriter()
        w.bytes(1, key)
        w.bytes(2, value)
        w.int64(3, lease)
        return w
    }

    static func deleteRequest(key: [UInt8]) -> ProtoWriter {
        var w = ProtoWriter()
        w.bytes(1, key)
        return w
    }

    static func watchCreateRequest(prefix: [UInt8], startRevision: Int64) -> ProtoWriter {
        var create = ProtoWriter()
        create.bytes(1, prefix)
        create.bytes(2, prefixEnd(prefix))
        create.int64(3, startRevision)
        create.bool(4, true)  // progress_notify: an idle watch still hears from the server
        // fragment: etcd splits a batch larger than its request limit into
        // several responses, so that no response is larger than that limit
        // or one event; unsplit, a batch of up to 1,000 revisions is one
        // message of any size.
        create.bool(8, true)
        var w = ProtoWriter()
        w.message(1, create)
        return w
    }

    static func leaseGrantRequest(ttlSeconds: Int64) -> ProtoWriter {
        var w = ProtoWriter()
        w.int64(1, ttlSeconds)
        return w
    }

    /// LeaseKeepAliveRequest and LeaseRevokeRequest are both `{ID = 1}`.
    static func leaseIDRequest(_ id: Int64) -> ProtoWriter {
        var w = ProtoWriter()
        w.int64(1, id)
        return w
    }

    static func headerRevision(_ bytes: ArraySlice<UInt8>) throws(ProtoDecodeError) -> Int64 {
        var reader = ProtoReader(bytes)
        var revision: Int64 = 0
        while let (field, v) = try reader.next() {
            if field == 3 { revision = v.int64 }
        }
        return revision
    }

    static func rangeResponse(_ bytes: [UInt8]) throws(ProtoDecodeError) -> EtcdRangePage {
        var reader = ProtoReader(bytes)
        var page = EtcdRangePage()
        while let (field, v) = try reader.next() {
            switch field {
            case 1: page.revision = try headerRevision(v.slice)
            case 2: page.kvs.append(try EtcdKeyValue(v.slice))
            case 3: page.more = v.int64 != 0
            case 4: page.count = v.int64
            default: break
            }
        }
        return page
    }

    struct WatchResponse {
        var revision: Int64 = 0
        var created = false
        var canceled = false
        var compactRevision: Int64 = 0
        var cancelReason = ""
        /// More responses follow with the rest of this batch's events.
        var fragment = false
        var events: [EtcdWatchEvent] = []
    }

    static func watchResponse(_ bytes: [UInt8]) throws(ProtoDecodeError) -> WatchResponse {
        var reader = ProtoReader(bytes)
        var out = WatchResponse()
        while let (field, v) = try reader.next() {
            switch field {
            case 1: out.revision = try headerRevision(v.slice)
            case 3: out.created = v.int64 != 0
            case 4: out.canceled = v.int64 != 0
            case 5: out.compactRevision = v.int64
            case 6: out.cancelReason = String(decoding: v.slice, as: UTF8.self)
            case 7: out.fragment = v.int64 != 0
            case 11:
                var event = ProtoReader(v.slice)
                var kind = EtcdWatchEvent.Kind.put
                var kv: EtcdKeyValue?
                while let (f, ev) = try event.next() {
                    if f == 1 { kind = ev.int64 == 1 ? .delete : .put }
                    if f == 2 { kv = try EtcdKeyValue(ev.slice) }
                }
                if let kv { out.events.append(EtcdWatchEvent(kind: kind, kv: kv)) }
            default: break
            }
        }
        return out
    }

    /// LeaseGrantResponse and LeaseKeepAliveResponse: `{ID = 2, TTL = 3}`
    /// (grant also has `error = 4`).
    static func leaseResponse(_ bytes: [UInt8]) throws(ProtoDecodeError) -> (id: Int64, ttl: Int64, error: String) {
        var reader = ProtoReader(bytes)
        var id: Int64 = 0
        var ttl: Int64 = 0
        var error = ""
        while let (field, v) = try reader.next() {
            switch field {
            case 2: id = v.int64
            case 3: ttl = v.int64
            case 4: error = String(decoding: v.slice, as: UTF8.self)
            default: break
            }
        }
        return (id, ttl, error)
    }
}
