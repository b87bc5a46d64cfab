import MeshgateYAML
import NIOCore
import NIOPosix
import Testing
@testable import GatewayHost
@testable import MeshgateConfig
@testable import MeshgateSupport
@testable import MeshgateControl

/// The admin addresses' rules: who may POST /reload, what a read-only
/// address shows of filter configs, what the dashboard embeds, how many
/// request series are kept, how /metrics gathers.
@Suite struct AdminOriginCheckTests {
    let loopback = AdminOriginCheck(address: SocketAddressSpec(host: "127.0.0.1", port: 9901))

    @Test func hostMustNameThisAddress() {
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: nil) == nil)
        #expect(loopback.refusal(host: "localhost:9901", origin: nil) == nil)
        #expect(loopback.refusal(host: "LocalHost:9901", origin: nil) == nil)
        #expect(loopback.refusal(host: "[::1]:9901", origin: nil) == nil)
        // A DNS-rebinding page's requests carry its own name.
        #expect(loopback.refusal(host: "evil.example:9901", origin: nil)?.contains("DNS-rebinding") == true)
        // Another port (a port-forward), or none: no port makes a name rebindable.
        #expect(loopback.refusal(host: "127.0.0.1:19901", origin: nil) == nil)
        #expect(loopback.refusal(host: "localhost", origin: nil) == nil)
        #expect(loopback.refusal(host: "127.0.0.1:x", origin: nil) != nil)
        #expect(loopback.refusal(host: "[::1", origin: nil) != nil)
        #expect(loopback.refusal(host: nil, origin: nil)?.contains("no Host") == true)
        #expect(loopback.refusal(host: "", origin: nil) != nil)
        // A name the address is configured with is its own.
        let named = AdminOriginCheck(address: SocketAddressSpec(host: "admin.internal", port: 9901))
        #expect(named.refusal(host: "admin.internal:9901", origin: nil) == nil)
        #expect(named.refusal(host: "10.1.2.3:9901", origin: nil) == nil)
        #expect(named.refusal(host: "admin.internal.evil.example:9901", origin: nil) != nil)
    }

    @Test func originWhenPresentMustBeThisAddress() {
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: "http://127.0.0.1:9901") == nil)
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: "https://evil.example")?.contains("Origin") == true)
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: "null") != nil)
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: "http://localhost:9901") != nil)
    }

    /// Every request to the full address, GET included: a page that
    /// rebinds its own name to the address must not read /config.
    @Test func everyRequestMustNameTheAddressUnlessAllowed() {
        #expect(loopback.hostRefusal(host: "127.0.0.1:9901") == nil && loopback.hostRefusal(host: "localhost.:9901") == nil)
        #expect(loopback.hostRefusal(host: "rebound.example:9901")?.contains("admin.allowed_hosts") == true)
        #expect(loopback.hostRefusal(host: "") != nil)
        // No Host at all (HTTP/1.0 tools) is no browser's request.
        #expect(loopback.hostRefusal(host: nil) == nil)
        let allowing = AdminOriginCheck(address: SocketAddressSpec(host: "0.0.0.0", port: 9901), allowedHosts: ["Gateway.Internal", "ops.example."])
        #expect(allowing.hostRefusal(host: "gateway.internal:9901") == nil && allowing.hostRefusal(host: "GATEWAY.INTERNAL.") == nil)
        #expect(allowing.hostRefusal(host: "ops.example") == nil)
        #expect(allowing.hostRefusal(host: "x.gateway.internal") != nil && allowing.hostRefusal(host: "gateway.internal.evil.example") != nil)
        #expect(allowing.refusal(host: "gateway.internal:9901", origin: "http://gateway.internal:9901") == nil)
    }

    @Test func secFetchSiteMustBeSameOriginOrNone() {
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: nil, fetchSite: "same-origin") == nil)
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: nil, fetchSite: "none") == nil)
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: "http://127.0.0.1:9901", fetchSite: "cross-site")?.contains("Sec-Fetch-Site") == true)
        #expect(loopback.refusal(host: "127.0.0.1:9901", origin: nil, fetchSite: "same-site") != nil)
    }

    @Test func allowedHostsAreNamesWithoutPortOrScheme() throws {
        let base = "listeners: [{ name: l, address: 127.0.0.1:1, routes: [] }]\nclusters: []\nadmin: { address: 0.0.0.0:9901, allowed_hosts: HOSTS }\n"
        let parsed = try ConfigLoader.parse(base.replacingOccurrences(of: "HOSTS", with: "[gateway.internal, ops.example.]"), file: "a.yaml")
        #expect(parsed.admin?.allowedHosts == ["gateway.internal", "ops.example."])
        for bad in ["[gateway.internal:9901]", "[\"http://gateway.internal\"]", "[\"*.internal\"]", "[\"\"]", "[{ a: b }]"] {
            do {
                _ = try ConfigLoader.parse(base.replacingOccurrences(of: "HOSTS", with: bad), file: "a.yaml")
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.field == "admin.allowed_hosts[0]" && error.message.contains("host name without port"), "\(error)")
            }
        }
    }

    @Test func ipLiterals() {
        #expect(AdminOriginCheck.isIPLiteral("10.0.0.1"))
        #expect(AdminOriginCheck.isIPLiteral("::1") && AdminOriginCheck.isIPLiteral("fe80::1%eth0"))
        #expect(!AdminOriginCheck.isIPLiteral("10.0.0.256"))
        #expect(!AdminOriginCheck.isIPLiteral("1.2.3"))
        #expect(!AdminOriginCheck.isIPLiteral("1.2.3.4.nip.io"))
        #expect(!AdminOriginCheck.isIPLiteral("example.com"))
    }
}

@Suite struct AdminRedactionTests {
    private func node(_ yaml: String) throws -> YAMLNode { try YAMLParser.parse(yaml) }

    @Test func secretKeyNamesAreFound() {
        for name in ["authorization", "Authorization", "bearer_token", "hmac_key", "cookie", "set-cookie", "dsn", "database_dsn", "api_key",
                     "apiKey", "x-api-key", "apikey", "client_secret", "password", "db_pass", "pwd", "auth", "basic-auth", "key",
                     "privateKey", "private_key", "credentials", "session_id", "jwt", "signing_key", "salt", "access_token"] {
            #expect(AdminViews.isSecretKey(name), "\(name)")
        }
        for name in ["rate", "burst", "header", "max_attempts", "keepalive", "passthrough", "collector", "service_name", "monkey", "cluster"] {
            #expect(!AdminViews.isSecretKey(name), "\(name)")
        }
    }

    @Test func theFullAddressRedactsSecretsByNameAndCredentialShapedValues() throws {
        let config = try node("""
            rate: 5
            authorization: Bearer abc
            nested: { hmac_key: k1, list: [{ cookie: c1 }], header_value: "Bearer xyz", url: "postgres://u:pw@db:5432/x", plain: "http://h/p" }
            mirror: { header: X-Api-Key, header_value: opaque1 }
            other: { header: x-tenant, header_value: blue }
            """)
        let json = AdminViews.redacted(config).jsonText
        for secret in ["abc", "k1", "c1", "xyz", "pw@db", "opaque1"] { #expect(!json.contains(secret), "\(secret) in \(json)") }
        #expect(json.contains("\"rate\":5") && json.contains("http://h/p") && json.contains("blue") && json.contains("X-Api-Key"))
    }

    @Test func aReadOnlyAddressRedactsEveryValueAndKeepsTheShape() throws {
        let config = try node("""
            rate: 5
            header: x-tenant
            nested: { opaque_setting: s3cr3t, list: [one, { two: 2 }] }
            """)
        let json = AdminViews.fullyRedacted(config).jsonText
        #expect(json == #"{"rate":"[redacted]","header":"[redacted]","nested":{"opaque_setting":"[redacted]","list":["[redacted]",{"two":"[redacted]"}]}}"#)
    }

    @Test func aReadOnlyAddressShowsNoErrorTexts() {
        let event = GatewayEvents.Event(time: 1, sequence: 1, kind: .reload, message: "reload failed; the running config stays",
                                        fields: [("generation", "3"), ("error", "/etc/meshgate/mesh.yaml:4: 'hunter2' is not a duration")])
        let shown = AdminViews.publicEvent(event)
        #expect(shown.fields[0] == ("generation", "3"))
        #expect(shown.fields[1].0 == "error" && !shown.fields[1].1.contains("hunter2") && !shown.fields[1].1.contains("/etc"))
    }

    /// An allow-list: a health event's `reason` (what the upstream said, a
    /// connect or TLS error), paths, and fields nobody listed are replaced;
    /// names, addresses and numbers stay.
    @Test func readOnlyEventsKeepOnlyListedFields() {
        let health = GatewayEvents.Event(time: 1, sequence: 2, kind: .health, message: "endpoint unhealthy",
                                         fields: [("cluster", "mesh"), ("endpoint", "10.0.0.1:50051"),
                                                  ("reason", "1 consecutive failed checks; last: Check failed: INTERNAL: db password hunter3 refused")])
        let shown = AdminViews.publicEvent(health)
        #expect(shown.fields[0] == ("cluster", "mesh") && shown.fields[1] == ("endpoint", "10.0.0.1:50051"))
        #expect(shown.fields[2] == ("reason", AdminViews.redactedError))
        let plugin = GatewayEvents.Event(time: 1, sequence: 3, kind: .plugin, message: "plugin loaded",
                                         fields: [("plugin", "retry"), ("sha256", "abc"), ("path", "/opt/p/libretry.so"), ("someday", "x")])
        #expect(AdminViews.publicEvent(plugin).fields.map(\.1) == ["retry", "abc", AdminViews.redactedError, AdminViews.redactedError])
        let certificate = GatewayEvents.Event(time: 1, sequence: 4, kind: .certificate, message: "TLS material reloaded",
                                              fields: [("field", "listeners[0].tls"), ("cert", "/etc/certs/s.pem"), ("ca", "/etc/certs/ca.pem")])
        #expect(AdminViews.publicEvent(certificate).fields.map(\.1) == ["listeners[0].tls", AdminViews.redactedError, AdminViews.redactedError])
    }
}

@Suite struct DashboardEmbeddingTests {
    @Test func theEmbeddedJSONCannotEndOrBendTheScript() {
        let json = #"{"method":"<!--<script>","other":"</script><b>&amp;","plain":"a\\<b"}"#
        let safe = DashboardPage.scriptSafe(json)
        #expect(!safe.contains("<") && !safe.contains(">") && !safe.contains("&"))
        #expect(safe == #"{"method":"\u003c!--\u003cscript\u003e","other":"\u003c/script\u003e\u003cb\u003e\u0026amp;","plain":"a\\\u003cb"}"#)
        let page = DashboardPage.html(initial: json)
        #expect(!page.contains("<!--<script>") && !page.contains("</script><b>"))
        // One script element: its end is the page's own.
        #expect(page.components(separatedBy: "</script>").count == 2)
    }
}

@Suite struct MetricSeriesBudgetTests {
    private func key(_ method: String, _ cluster: String = "c") -> LoopMetrics.CallKey {
        LoopMetrics.CallKey(path: "/svc.S/\(method)", cluster: cluster)
    }

    @Test func pastTheCapNewNamesCountAsOther() {
        let budget = MetricSeriesBudget(capacity: 3)
        let a = LoopMetrics(budget: budget)
        let b = LoopMetrics(budget: budget)
        for i in 0..<50 { a.callEnded(path: "/svc.S/m\(i)", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1) }
        #expect(a.calls.count == 4)  // three series and "other"
        #expect(a.calls[LoopMetrics.CallKey(path: LoopMetrics.otherPath, cluster: "c")]?.count == 47)
        // A series already kept still counts as itself on its loop.
        a.callEnded(path: "/svc.S/m0", cluster: "c", code: .ok, seconds: 0.001, endNanos: 2)
        #expect(a.calls[key("m0")]?.count == 2)
        // The cap is for all loops together.
        b.callEnded(path: "/svc.S/new", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1)
        #expect(b.calls[key("new")] == nil)
        #expect(budget.count == 3)
        #expect(MetricsSnapshot.split(LoopMetrics.otherPath) == ("other", "other"))
    }

    /// Junk method names end UNIMPLEMENTED upstream (or are cut short by
    /// their client): they never take a place, so a flood of them leaves
    /// room for the real methods; a series already kept counts every code.
    @Test func callsThatShowNoMethodStartNoSeries() {
        let budget = MetricSeriesBudget(capacity: 2)
        let loop = LoopMetrics(budget: budget)
        let other = LoopMetrics.CallKey(path: LoopMetrics.otherPath, cluster: "c")
        for i in 0..<100 { loop.callEnded(path: "/svc.S/junk\(i)", cluster: "c", code: .unimplemented, seconds: 0.001, endNanos: 1) }
        loop.callEnded(path: "/svc.S/reset", cluster: "c", code: .cancelled, seconds: 0.002, endNanos: 1)
        loop.callEnded(path: "/svc.S/expired", cluster: "c", code: .deadlineExceeded, seconds: 0.0001, endNanos: 1)
        #expect(budget.count == 0 && loop.calls.count == 1)
        #expect(loop.calls[other]?.count == 102)
        // A real method takes a place with any other outcome; a stream its
        // client cancels after a while is one too.
        loop.callEnded(path: "/svc.S/Real", cluster: "c", code: .notFound, seconds: 0.001, endNanos: 2)
        loop.callEnded(path: "/svc.S/Watch", cluster: "c", code: .cancelled, seconds: 30, endNanos: 2)
        #expect(loop.calls[key("Real")]?.count == 1 && loop.calls[key("Watch")]?.count == 1 && budget.count == 2)
        // Once kept, UNIMPLEMENTED counts in it too.
        loop.callEnded(path: "/svc.S/Real", cluster: "c", code: .unimplemented, seconds: 0.001, endNanos: 3)
        #expect(loop.calls[key("Real")]?.codes[.unimplemented] == 1)
        #expect(loop.calls[other]?.count == 102)
    }

    @Test func aLoopMayCountASeriesAnotherLoopHolds() {
        let budget = MetricSeriesBudget(capacity: 2)
        let a = LoopMetrics(budget: budget)
        let b = LoopMetrics(budget: budget)
        a.callEnded(path: "/svc.S/m", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1)
        b.callEnded(path: "/svc.S/m", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1)
        #expect(a.calls[key("m")] != nil && b.calls[key("m")] != nil)
        #expect(budget.count == 1)
    }

    @Test func longLabelsCountAsOther() {
        let budget = MetricSeriesBudget(capacity: 100)
        let loop = LoopMetrics(budget: budget)
        let long = String(repeating: "m", count: MetricSeriesBudget.maxLabelBytes + 1)
        loop.callEnded(path: "/svc.S/\(long)", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1)
        loop.callEnded(path: "/\(long).S/m", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1)
        let fits = String(repeating: "m", count: MetricSeriesBudget.maxLabelBytes)
        loop.callEnded(path: "/svc.S/\(fits)", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1)
        #expect(loop.calls[LoopMetrics.CallKey(path: LoopMetrics.otherPath, cluster: "c")]?.count == 2)
        #expect(loop.calls[key(fits)] != nil)
    }

    @Test func idleSeriesExpireAndFreeTheirPlace() {
        let budget = MetricSeriesBudget(capacity: 2)
        let loop = LoopMetrics(budget: budget)
        loop.callEnded(path: "/svc.S/old", cluster: "c", code: .ok, seconds: 0.001, endNanos: 1_000)
        loop.callEnded(path: "/svc.S/recent", cluster: "c", code: .ok, seconds: 0.001, endNanos: 9_000)
        loop.callEnded(path: "/svc.S/refused", cluster: "c", code: .ok, seconds: 0.001, endNanos: 9_000)
        #expect(loop.calls[key("refused")] == nil)
        let (active, idle) = loop.seriesActivity(nowNanos: 10_000, idleNanos: 5_000)
        #expect(active.contains(key("recent")) && idle.contains(key("old")))
        // A call that came after the choice keeps its series.
        loop.expire([key("old"), key("recent")], nowNanos: 10_000, idleNanos: 5_000)
        #expect(loop.calls[key("old")] == nil && loop.calls[key("recent")] != nil)
        #expect(budget.count == 1)
        loop.callEnded(path: "/svc.S/later", cluster: "c", code: .ok, seconds: 0.001, endNanos: 11_000)
        #expect(loop.calls[key("later")] != nil)
    }
}

@Suite struct MetricsScrapesTests {
    @Test func concurrentScrapesShareGathersAtMostOneAnInterval() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let scrapes = MetricsScrapes(loop: loop, minInterval: .milliseconds(200)) { loop, counts in
            // A gather that takes a while, as copying every loop's counters does.
            loop.scheduleTask(in: .milliseconds(20)) { "gather \(counts.gathers)" }.futureResult
        }
        let started = NIODeadline.now()
        var texts: [String] = []
        // 50 scrapes at once, five times over: each wave is answered by
        // gathers that started after it arrived, never one per scrape.
        for _ in 0..<5 {
            let wave = (0..<50).map { _ in scrapes.text(on: loop) }
            for future in wave { texts.append(String(buffer: try await future.get())) }
        }
        let elapsed = NIODeadline.now() - started
        let counts = scrapes.counts
        #expect(counts.scrapes == 250)
        #expect(counts.gathers >= 5 && counts.gathers <= 10, "\(counts.gathers) gathers")
        #expect(Set(texts).count == Int(counts.gathers))
        // At most one gather per interval: five gathers take four intervals.
        #expect(elapsed >= .milliseconds(4 * 200))
    }

    @Test func aScrapeNeverGetsAGatherFromBeforeIt() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let scrapes = MetricsScrapes(loop: loop, minInterval: .milliseconds(100)) { loop, counts in
            loop.makeSucceededFuture("\(counts.gathers)")
        }
        let first = String(buffer: try await scrapes.text(on: loop).get())
        let second = String(buffer: try await scrapes.text(on: loop).get())
        #expect(first == "1" && second == "2")
    }
}

@Suite struct ConnectionDefaultsTests {
    @Test func listenersShareThreeQuartersOfTheOpenFileLimit() {
        #expect(ConnectionLimit.listenerDefault(openFileLimit: 1_048_576, listeners: 2) == 10_000)
        #expect(ConnectionLimit.listenerDefault(openFileLimit: 1024, listeners: 1) == 768)
        #expect(ConnectionLimit.listenerDefault(openFileLimit: 1024, listeners: 2) == 384)
        #expect(ConnectionLimit.listenerDefault(openFileLimit: UInt64.max, listeners: 3) == 10_000)
        #expect(ConnectionLimit.listenerDefault(openFileLimit: 1, listeners: 3) == 1)
    }

    @Test func aHealthOnlyListenerIdlesOutAfterAMinuteByDefault() throws {
        let config = try ConfigLoader.parse("""
            listeners:
              - { name: probes, address: 127.0.0.1:1, health_only: true }
              - { name: slow-probes, address: 127.0.0.1:2, health_only: true, idle_timeout: 5m }
              - { name: public, address: 127.0.0.1:3, routes: [] }
            clusters: []
            """, file: "a.yaml")
        #expect(config.listeners.map(\.idleTimeout) == [.seconds(60), .seconds(300), .seconds(3600)])
    }

    @Test func adminLimitsParseWithDefaults() throws {
        let base = "listeners: [{ name: l, address: 127.0.0.1:1, routes: [] }]\nclusters: []\n"
        let plain = try ConfigLoader.parse("admin: { address: 127.0.0.1:9901 }\n" + base, file: "a.yaml")
        #expect(plain.admin?.maxConnections == 64 && plain.admin?.idleTimeout == .seconds(60) && plain.admin?.requestTimeout == .seconds(10))
        #expect(plain.runtime.maxMetricSeries == 1000 && plain.runtime.metricSeriesIdleTimeout == .seconds(600))
        let set = try ConfigLoader.parse("""
            admin: { address: 127.0.0.1:9901, max_connections: 8, idle_timeout: 5s, request_timeout: 2s }
            runtime: { max_metric_series: 50, metric_series_idle_timeout: 1m }

            """ + base, file: "a.yaml")
        #expect(set.admin?.maxConnections == 8 && set.admin?.idleTimeout == .seconds(5) && set.admin?.requestTimeout == .seconds(2))
        #expect(set.runtime.maxMetricSeries == 50 && set.runtime.metricSeriesIdleTimeout == .seconds(60))
        do {
            _ = try ConfigLoader.parse("admin: { address: 127.0.0.1:9901, request_timeout: 0s }\n" + base, file: "a.yaml")
            Issue.record("request_timeout 0s was accepted")
        } catch {
            #expect(error.field == "admin.request_timeout" && error.mark?.line == 1)
        }
        do {
            _ = try ConfigLoader.parse("admin: { address: 127.0.0.1:9901, max_connections: 0 }\n" + base, file: "a.yaml")
            Issue.record("max_connections 0 was accepted")
        } catch {
            #expect(error.field == "admin.max_connections")
        }
    }
}
