import MeshgateJSON
import MeshgatePosix
import NIOConcurrencyHelpers

/// What an operator wants to see happen: health transitions, ejections and
/// their end, reloads, plugin loads and refusals, membership changes,
/// certificate rotations, the drain. Each is logged as before and kept:
/// the last `capacity` in memory, for `/events`, the dashboard and
/// `meshgate status`. A lock per event: they are rare, never per call.
public final class GatewayEvents: Sendable {
    /// One process runs one gateway; its registries record here.
    public static let shared = GatewayEvents()
    public static let capacity = 500

    public enum Kind: String, Sendable, CaseIterable {
        case health, ejection, reload, plugin, membership, certificate, drain
    }

    public struct Event: Sendable {
        /// Seconds since 1970.
        public var time: Double
        public var sequence: UInt64
        public var kind: Kind
        /// One line, e.g. "endpoint unhealthy".
        public var message: String
        public var fields: [(String, String)]
    }

    private struct Ring {
        public var events: [Event] = []
        public var next = 0
        public var sequence: UInt64 = 0
    }

    private let ring = NIOLockedValueBox(Ring())

    /// Logs the event at `level` and keeps it.
    public func record(_ kind: Kind, _ level: Log.Level, _ message: String, _ fields: KeyValuePairs<String, String> = [:]) {
        Log.write(level, message, fields)
        let time = Double(Posix.wallClockNanos() / 1_000_000) / 1000
        ring.withLockedValue { r in
            r.sequence += 1
            let event = Event(time: time, sequence: r.sequence, kind: kind, message: message, fields: fields.map { ($0.key, $0.value) })
            if r.events.count < Self.capacity {
                r.events.append(event)
            } else {
                r.events[r.next] = event
                r.next = (r.next + 1) % Self.capacity
            }
        }
    }

    /// The newest `limit` events, oldest first.
    public func recent(limit: Int = capacity) -> [Event] {
        ring.withLockedValue { r in
            let ordered = Array(r.events[r.next...] + r.events[..<r.next])
            return Array(ordered.suffix(limit))
        }
    }

    /// `{"events":[{"time":…,"seq":…,"kind":…,"message":…,"fields":{…}}]}`.
    public func json(limit: Int = capacity, transform: (Event) -> Event = { $0 }) -> String {
        var json = JSONWriter()
        json.object { o in
            o.field("events") {
                $0.array(recent(limit: limit).map(transform)) { json, e in
                    json.object { o in
                        o.field("time") { $0.double(e.time) }
                        o.field("seq", e.sequence)
                        o.field("kind", e.kind.rawValue)
                        o.field("message", e.message)
                        o.field("fields") { $0.object { f in for (key, value) in e.fields { f.field(key, value) } } }
                    }
                }
            }
        }
        return json.text + "\n"
    }
}
