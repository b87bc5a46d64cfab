import Foundation
import MeshgatePosix
import PluginKit

/// Sends finished spans to an OTLP/HTTP collector (protobuf) from its own
/// thread. Event loops only append to a bounded queue (one short lock per
/// span, never I/O); a full queue drops the span and counts it, so a call
/// never waits for the collector. The thread sends a batch when
/// `batch_size` spans are waiting or every `flush_interval`.
///
/// `@unchecked Sendable`: the mutable state (`queue`, `dropped`,
/// `stopping`) is only touched under `condition`'s lock; the rest is
/// immutable after init.
final class SpanExporter: @unchecked Sendable {
    let endpoint: CollectorURL
    let serviceName: String
    let queueLimit: Int
    let batchSize: Int
    let flushIntervalMs: Int
    let timeoutMs: Int

    private let condition = NSCondition()
    private var queue: [SpanRecord] = []
    private var dropped: UInt64 = 0
    private var stopping = false
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    /// /metrics counters (host ABI 1.1), by service name.
    private let exportedCounter: UInt64
    private let droppedCounter: UInt64
    private let failedCounter: UInt64

    init(endpoint: CollectorURL, serviceName: String, queueLimit: Int, batchSize: Int, flushIntervalMs: Int, timeoutMs: Int) {
        self.endpoint = endpoint
        self.serviceName = serviceName
        self.queueLimit = queueLimit
        self.batchSize = batchSize
        self.flushIntervalMs = flushIntervalMs
        self.timeoutMs = timeoutMs
        let labels = "service=\"\(PluginHost.labelValue(serviceName))\""
        exportedCounter = PluginHost.declareCounter("meshgate_tracing_spans_exported_total", help: "Spans the collector accepted.", labels: labels)
        droppedCounter = PluginHost.declareCounter("meshgate_tracing_spans_dropped_total",
                                                   help: "Spans dropped because the export queue was full.", labels: labels)
        failedCounter = PluginHost.declareCounter("meshgate_tracing_spans_failed_total",
                                                  help: "Spans lost because the collector failed or refused them.", labels: labels)
        let thread = Thread { [self] in run() }
        thread.name = "meshgate-otlp"
        self.thread = thread
        thread.start()
    }

    /// Any event loop: queue a span, or drop it when the queue is full.
    func enqueue(_ span: SpanRecord) {
        condition.lock()
        if queue.count >= queueLimit {
            dropped += 1
            PluginHost.add(droppedCounter)
        } else {
            queue.append(span)
            if queue.count >= batchSize { condition.signal() }
        }
        condition.unlock()
    }

    /// Control thread (config_destroy): sends what is queued (bounded by
    /// the export timeout) and ends the thread.
    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        _ = finished.wait(timeout: .now() + .milliseconds(timeoutMs + 500))
    }

    private func run() {
        var lastDropReport: UInt64 = 0
        var encoder = OTLPEncoder()
        var batch: [SpanRecord] = []
        batch.reserveCapacity(batchSize)
        while true {
            condition.lock()
            if queue.count < batchSize && !stopping {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(flushIntervalMs) / 1000))
            }
            if queue.count <= batchSize {
                // The usual case: take the whole queue by swapping buffers.
                swap(&batch, &queue)
            } else {
                batch.append(contentsOf: queue.prefix(batchSize))
                queue.removeFirst(batchSize)
            }
            let done = stopping && queue.isEmpty
            let drops = dropped
            condition.unlock()
            defer { batch.removeAll(keepingCapacity: true) }
            if !batch.isEmpty {
                let body = encoder.exportRequest(batch, serviceName: serviceName)
                switch HTTPPost.send(body, to: endpoint, contentType: "application/x-protobuf", timeoutMs: timeoutMs) {
                case .success(let status) where (200..<300).contains(status):
                    PluginHost.add(exportedCounter, UInt64(batch.count))
                case .success(let status):
                    PluginHost.add(failedCounter, UInt64(batch.count))
                    PluginHost.log(3, "tracing", "OTLP collector \(endpoint.text) answered HTTP \(status); \(batch.count) spans lost")
                case .failure(let error):
                    PluginHost.add(failedCounter, UInt64(batch.count))
                    PluginHost.log(3, "tracing", "OTLP export to \(endpoint.text) failed: \(error.message); \(batch.count) spans lost")
                }
            }
            if drops > lastDropReport {
                PluginHost.log(2, "tracing", "span queue full: \(drops) spans dropped so far (queue_size \(queueLimit))")
                lastDropReport = drops
            }
            if done { break }
        }
        finished.signal()
    }
}

/// `http://host:port/path` (OTLP/HTTP; TLS to the collector is not supported).
struct CollectorURL {
    let text: String
    let host: String
    let port: Int
    let path: String

    init?(_ text: String) {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst("http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        path = slash == rest.endIndex ? "/v1/traces" : String(rest[slash...])
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else {
            return nil
        }
        var host = authority[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { return nil }
        self.text = text
        self.host = String(host)
        self.port = port
    }
}

/// One HTTP/1.1 POST on a fresh connection, with a timeout on every step.
enum HTTPPost {
    struct Failure: Error { let message: String }

    static func send(_ body: [UInt8], to url: CollectorURL, contentType: String, timeoutMs: Int) -> Result<Int, Failure> {
        let connection: BlockingTCPConnection
        do {
            connection = try BlockingTCPConnection(host: url.host, port: url.port, timeoutMs: timeoutMs)
        } catch {
            return .failure(Failure(message: error.description))
        }
        let head = "POST \(url.path) HTTP/1.1\r\nHost: \(url.host):\(url.port)\r\nContent-Type: \(contentType)\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\nUser-Agent: meshgate-tracing\r\n\r\n"
        // One write: a second small one would wait on Nagle for the first's ACK.
        var response: [UInt8] = []
        do {
            try connection.send(Array(head.utf8) + body)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !response.contains(UInt8(ascii: "\n")) {
                let n = try connection.receive(into: &buffer)
                guard n > 0 else { return .failure(Failure(message: "no HTTP response: connection closed")) }
                response += buffer[0..<n]
            }
        } catch {
            return .failure(Failure(message: error.description))
        }
        // "HTTP/1.1 200 OK"
        let line = String(decoding: response.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return .failure(Failure(message: "bad status line '\(line)'")) }
        return .success(status)
    }
}
