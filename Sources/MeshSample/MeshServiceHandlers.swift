import Foundation
import MeshProto
import MeshgateGRPC
import MeshgateGRPCCalls
import NIOCore

/// mesh.v1.MeshService: the four gRPC patterns, with the test knobs
/// (delay, injected failure) applied before the first answer.
enum MeshServiceHandlers {
    static func register(_ table: inout [String: (GRPCServerCall, ReplicaState) -> Void]) {
        table["/mesh.v1.MeshService/Process"] = process
        table["/mesh.v1.MeshService/StreamEvents"] = streamEvents
        table["/mesh.v1.MeshService/CollectMetrics"] = collectMetrics
        table["/mesh.v1.MeshService/Chat"] = chat
    }

    static func count(_ call: GRPCServerCall, _ replica: ReplicaState, _ method: String) {
        replica.stats.calls += 1
        replica.stats.callsByMethod[method, default: 0] += 1
        call.onFinish = { _ in replica.stats.completed += 1 }
        call.onCancelled = { replica.stats.cancelled += 1 }
    }

    /// Runs `body` after the call's delay, unless a failure is injected.
    static func withKnobs(_ call: GRPCServerCall, _ replica: ReplicaState, _ body: @escaping () -> Void) {
        var delayMs = 0
        if let text = call.headers["x-mesh-delay-ms"], let ms = Int(text) {
            delayMs = ms
        } else if replica.faults.delayMs > 0 {
            let p = replica.faults.delayProbability > 0 ? replica.faults.delayProbability : 1
            if Double.random(in: 0..<1) < p { delayMs = Int(replica.faults.delayMs) }
        }
        var failCode: Int?
        if let text = call.headers["x-mesh-fail-code"], let code = Int(text) {
            let p = call.headers["x-mesh-fail-probability"].flatMap(Double.init) ?? 1
            if Double.random(in: 0..<1) < p { failCode = code }
        } else if replica.faults.failProbability > 0, Double.random(in: 0..<1) < replica.faults.failProbability {
            failCode = replica.faults.failCode == 0 ? 14 : Int(replica.faults.failCode)
        }
        let run = {
            if let failCode {
                let code = GRPCStatusCode(rawValue: failCode) ?? .unknown
                call.finish(GRPCStatus(code, "injected failure by replica \(replica.id)"))
            } else {
                body()
            }
        }
        if delayMs > 0 {
            replica.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delayMs))) {
                if !call.closed { run() }
            }
        } else {
            run()
        }
    }

    static func process(_ call: GRPCServerCall, _ replica: ReplicaState) {
        count(call, replica, "Process")
        var request: Mesh_V1_ProcessRequest?
        call.onMessage = { request = call.decode(Mesh_V1_ProcessRequest.self, $0) }
        call.onEnd = {
            withKnobs(call, replica) {
                guard let request else { return call.finish(GRPCStatus(.invalidArgument, "expected one ProcessRequest")) }
                var response = Mesh_V1_ProcessResponse()
                response.requestID = request.requestID
                response.result = "processed: " + request.data
                response.replicaID = replica.id
                response.payload = request.payload
                if call.headers["x-mesh-echo-headers"] == "1" {
                    // A repeated field comes back as one, its values joined (as HTTP folds them).
                    for (name, value) in call.headers {
                        response.requestHeaders[name] = response.requestHeaders[name].map { $0 + ", " + value } ?? value
                    }
                }
                call.send(response)
                call.finish()
            }
        }
    }

    static func streamEvents(_ call: GRPCServerCall, _ replica: ReplicaState) {
        count(call, replica, "StreamEvents")
        var request: Mesh_V1_StreamRequest?
        call.onMessage = { request = call.decode(Mesh_V1_StreamRequest.self, $0) }
        call.onEnd = {
            withKnobs(call, replica) {
                guard let request else { return call.finish(GRPCStatus(.invalidArgument, "expected one StreamRequest")) }
                let total = request.count > 0 ? Int(request.count) : 10
                let types = request.eventTypes.isEmpty ? ["event"] : request.eventTypes
                let payload = Data(repeating: 0x61, count: max(0, Int(request.payloadSize)))
                var next = 0
                func emit() {
                    while next < total, !call.closed {
                        var event = Mesh_V1_Event()
                        event.streamID = request.streamID
                        event.eventType = types[next % types.count]
                        event.sequence = Int64(next)
                        event.payload = payload
                        event.replicaID = replica.id
                        call.send(event)
                        next += 1
                        if request.intervalMs > 0, next < total {
                            replica.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(request.intervalMs))) { emit() }
                            return
                        }
                        if call.queuedBytes >= GRPCServerCall.lowWater {
                            call.onDrained = { emit() }
                            return
                        }
                    }
                    call.finish()
                }
                emit()
            }
        }
    }

    static func collectMetrics(_ call: GRPCServerCall, _ replica: ReplicaState) {
        count(call, replica, "CollectMetrics")
        var summary = Mesh_V1_MetricsSummary()
        call.onMessage = { bytes in
            guard let metric = call.decode(Mesh_V1_Metric.self, bytes) else { return }
            summary.count += 1
            summary.sum += metric.value
        }
        call.onEnd = {
            withKnobs(call, replica) {
                summary.average = summary.count > 0 ? summary.sum / Double(summary.count) : 0
                summary.replicaID = replica.id
                call.send(summary)
                call.finish()
            }
        }
    }

    static func chat(_ call: GRPCServerCall, _ replica: ReplicaState) {
        count(call, replica, "Chat")
        var ready = false
        var backlog: [Mesh_V1_ChatMessage] = []
        func answer(_ message: Mesh_V1_ChatMessage) {
            var reply = Mesh_V1_ChatMessage()
            reply.userID = message.userID
            reply.message = "echo: " + message.message
            reply.sequence = message.sequence
            reply.replicaID = replica.id
            call.send(reply)
        }
        var ended = false
        call.onMessage = { bytes in
            guard let message = call.decode(Mesh_V1_ChatMessage.self, bytes) else { return }
            if ready { answer(message) } else { backlog.append(message) }
        }
        call.onEnd = {
            ended = true
            if ready { call.finish() }
        }
        withKnobs(call, replica) {
            ready = true
            call.sendHeaders()
            backlog.forEach(answer)
            backlog.removeAll()
            if ended { call.finish() }
        }
    }
}
