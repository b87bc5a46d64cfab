import MeshgateEtcd

/// One listing of an etcd prefix, read in pages of keys at one store
/// revision: which Range to send next, and what each answer means.
///
/// A page asks for no more keys than there are places left
/// (`max_endpoints` minus the keys kept so far) and no more than
/// `maxPageKeys`, so a listing reads what it keeps, not the whole prefix,
/// and no answer is larger than a page of honest values. A page over the
/// client's message limit (values larger than the gateway takes, which
/// etcd accepts up to 1.5 MiB) is asked again in halves; a single key
/// over it is then read without its value, to name it and step past it.
/// So a prefix holding any amount of data lists in bounded memory and
/// never fails for its size.
public struct EtcdListing {
    public enum Step: Equatable {
        /// Read the keys and values of this page.
        case read(EtcdRangeRequest)
        /// Read one key without its value: alone it was over the message
        /// limit.
        case findOversizeKey(EtcdRangeRequest)
        /// The listing is complete (`keysLeftUnread` says whether every
        /// place was taken before the prefix ended).
        case done
    }

    public let rangeEnd: [UInt8]
    public let maxPageKeys: Int
    /// The store revision of the first page; the later pages read at it,
    /// and the watch starts after it. 0 until a page has been read.
    public private(set) var revision: Int64 = 0
    /// The keys under the prefix at `revision` (the first page's count).
    public private(set) var keysUnderPrefix: Int64 = 0
    private var start: [UInt8]
    private var pageKeys: Int
    private var lastLimit = 0
    private var findingOversizeKey = false
    private var more = true
    private var placesLeft = Int.max

    public init(prefix: String, maxPageKeys: Int) {
        precondition(maxPageKeys > 0)
        self.start = Array(prefix.utf8)
        self.rangeEnd = EtcdRangeRequest.end(ofPrefix: start)
        self.maxPageKeys = maxPageKeys
        self.pageKeys = maxPageKeys
    }

    /// The listing ended with every place taken and keys still unread:
    /// some keys under the prefix wait for a place.
    public var keysLeftUnread: Bool { more && placesLeft == 0 }

    /// What to ask next, with `placesLeft` places for keys not kept yet.
    public mutating func next(placesLeft: Int) -> Step {
        self.placesLeft = placesLeft
        guard more, placesLeft > 0 else { return .done }
        if findingOversizeKey {
            lastLimit = 1
            return .findOversizeKey(EtcdRangeRequest(key: start, rangeEnd: rangeEnd, limit: 1, revision: revision, keysOnly: true))
        }
        lastLimit = min(pageKeys, placesLeft)
        return .read(EtcdRangeRequest(key: start, rangeEnd: rangeEnd, limit: lastLimit, revision: revision))
    }

    /// The page asked last was read (after a `findOversizeKey`, its one
    /// key is the one whose value was too large).
    public mutating func didRead(_ page: EtcdRangePage) {
        if revision == 0 {
            revision = page.revision
            keysUnderPrefix = page.count
        }
        if let last = page.kvs.last {
            start = last.key + [0]  // the next key after it
            more = page.more
        } else {
            more = false
        }
        if findingOversizeKey {
            findingOversizeKey = false
        } else if lastLimit == pageKeys {
            pageKeys = min(pageKeys * 2, maxPageKeys)  // after halving, grow back
        }
    }

    /// The page asked last was over the message limit. False when the
    /// listing cannot go on: a key alone, without its value, is over it.
    public mutating func pageTooLarge() -> Bool {
        if findingOversizeKey { return false }
        if lastLimit <= 1 {
            findingOversizeKey = true
        } else {
            pageKeys = lastLimit / 2
        }
        return true
    }
}
