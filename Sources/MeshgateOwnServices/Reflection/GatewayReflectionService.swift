import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import NIOCore
import ProtoWire
import MeshgateConfig
import MeshgateSupport
import MeshgateRouting
import MeshgateUpstream

/// grpc.reflection v1 and v1alpha, answered by the gateway for a listener
/// whose routes do not send reflection anywhere themselves (an explicit
/// route wins): `list_services` merges what every cluster routed on the
/// listener serves — each service listed once, and only by the cluster the
/// listener's routes send it to — with the gateway's own health and
/// reflection services; symbol, file and extension queries go to the
/// cluster that routes the symbol's service, then to the one that answered
/// for it before, then to the others in route order. A cluster without
/// reflection (or down) is left out with a log line, not an error.
///
/// Only routed services are described: files pass without the services
/// no route of the listener sends to the cluster that answered
/// (`RoutedFileDescriptors`), and a symbol of such a service is NOT_FOUND.
/// A cluster that did not know a symbol or file is not asked again for
/// `ReflectionCache.ttl`, and the listener's upstream queries are bounded
/// (`ReflectionQueryLimiter`): a client sending unknown names cannot make
/// the gateway fan out to every cluster per request without limit.
///
/// Requests on one stream are answered one at a time, in order.
package final class GatewayReflectionService {
    package static let paths: Set<String> = Set(ReflectionUpstreamQuery.Version.allCases.map(\.rawValue))
    package static let ownServices = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
    package static let upstreamTimeout = TimeAmount.seconds(5)
    package static let notFound: Int32 = 5
    package static let invalidArgument: Int32 = 3
    package static let resourceExhausted: Int32 = 8
    /// Requests a client may have waiting on one stream; more ends the
    /// stream with RESOURCE_EXHAUSTED (grpcurl sends one at a time).
    package static let maxPending = 16
    /// A ServerReflectionRequest names one symbol, file or extension:
    /// 16 KiB is far beyond any real one.
    package static let requestLimits = GRPCServerCall.RequestLimits(maxMessageBytes: 16 << 10)
    /// The longest symbol, file or extension type name looked up. Real
    /// ones are tens of bytes; each level of a dotted name is a lookup,
    /// so a 16 KiB `a.a.a…` would cost thousands of them per request, on
    /// a data-path loop, and the cache keeps what is asked (this bounds
    /// its bytes: `ReflectionCache.maxEntries` names of at most this).
    package static let maxNameBytes = 1024

    private let call: GRPCServerCall
    private let listener: ServingConfig.Listener
    private let generation: ReflectionScope
    private let cache: ReflectionCache
    private let version: ReflectionUpstreamQuery.Version
    private let eventLoop: EventLoop
    /// Requests waiting for their answer; their bytes are held from the
    /// connection's own-service budget until answered.
    private var pending: [[UInt8]] = []
    private var answering = false
    private var requestEnded = false
    private var closed = false

    private init(call: GRPCServerCall, listener: ServingConfig.Listener, generation: ReflectionScope, cache: ReflectionCache,
                 version: ReflectionUpstreamQuery.Version, eventLoop: EventLoop) {
        self.call = call
        self.eventLoop = eventLoop
        self.listener = listener
        self.generation = generation
        self.cache = cache
        self.version = version
    }

    package static func handle(connection: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String,
                       scope: ReflectionScope, cache: ReflectionCache, eventLoop: EventLoop, budget: GRPCServerCallBudget) -> GRPCServerCall {
        // The head is not kept: the service reads none of it.
        let call = GRPCServerCall(connection: connection, stream: stream, headers: HTTP2HeaderList(), path: path,
                                  limits: requestLimits, budget: budget)
        call.onRefused = { LimitCounters.shared.ownServiceRefused($0) }
        if call.refuseUnlessAdmitted() { return call }
        let service = GatewayReflectionService(call: call, listener: scope.listener, generation: scope,
                                               cache: cache, version: path == ReflectionUpstreamQuery.Version.v1alpha.rawValue ? .v1alpha : .v1,
                                               eventLoop: eventLoop)
        // The call holds the service through these closures until it ends.
        call.onMessage = { bytes in
            guard service.pending.count < Self.maxPending else {
                call.finish(GRPCStatus(.resourceExhausted, "more than \(Self.maxPending) reflection requests waiting on one stream"))
                return service.release()
            }
            guard budget.take(bytes.readableBytes) else {
                LimitCounters.shared.ownServiceRefused(.connectionBufferFull)
                call.finish(GRPCStatus(.resourceExhausted,
                                       "the requests held for this connection's calls to the gateway's own services passed \(budget.limit) bytes"))
                return service.release()
            }
            service.pending.append(Array(bytes.readableBytesView))
            service.next()
        }
        call.onEnd = {
            service.requestEnded = true
            service.next()
        }
        call.onClose = { service.release() }
        return call
    }

    private func release() {
        closed = true
        for request in pending { call.budget?.give(request.count) }
        pending.removeAll()
        call.onMessage = nil
        call.onEnd = nil
        call.onClose = nil
    }

    private func next() {
        guard !answering, !closed else { return }
        guard !pending.isEmpty else {
            if requestEnded {
                call.finish()
                release()
            }
            return
        }
        answering = true
        let request = pending.removeFirst()
        call.budget?.give(request.count)
        answer(request) { response in
            self.answering = false
            guard !self.closed else { return }
            self.call.send(bytes: response)
            // The next request on a later turn of the loop: answers that are
            // ready at once (cached, refused) never nest one inside another.
            self.eventLoop.assumeIsolated().execute { self.next() }
        }
    }

    private func answer(_ bytes: [UInt8], _ done: @escaping ([UInt8]) -> Void) {
        let host: String
        let request: ReflectionRequest
        do {
            (host, request) = try ReflectionRequest.decode(bytes)
        } catch {
            call.finish(GRPCStatus(.invalidArgument, "malformed ServerReflectionRequest: \(error)"))
            return release()
        }
        if let refusal = Self.nameRefusal(request) {
            // INVALID_ARGUMENT, as a reflection server answers a request it
            // cannot take (the stream stays open): the name was never
            // looked up, so NOT_FOUND would claim what is not known.
            done(ReflectionResponse.error(code: Self.invalidArgument, refusal, host: host, request: bytes))
            return
        }
        let listenerName = listener.config.name
        switch request {
        case .listServices:
            listServices { names in
                done(names.map { ReflectionResponse.list($0, host: host, request: bytes) } ?? self.busy(host: host, request: bytes))
            }
        case .fileByFilename(let name) where Self.ownFile(named: name) != nil:
            done(ReflectionResponse.files([Self.ownFile(named: name)!], host: host, request: bytes))
        case .fileContainingSymbol(let symbol) where Self.ownFile(symbol: symbol) != nil:
            // The gateway's own services (health, reflection) are described
            // by the gateway, whatever the clusters register.
            done(ReflectionResponse.files([Self.ownFile(symbol: symbol)!], host: host, request: bytes))
        case .fileByFilename(let name):
            ask(candidates(cache.cluster(file: name, generation: generation.number), symbol: nil), bytes, request, host: host) { outcome in
                done(self.reply(outcome, host: host, request: bytes,
                                notFound: "file '\(name)' is not served by any cluster routed on listener '\(listenerName)'"))
            }
        case .fileContainingSymbol, .fileContainingExtension, .allExtensionNumbersOfType:
            let symbol = request.symbol ?? ""
            ask(candidates(cache.cluster(symbol: symbol, generation: generation.number), symbol: symbol), bytes, request, host: host) { outcome in
                done(self.reply(outcome, host: host, request: bytes,
                                notFound: "symbol '\(symbol)' is not served by any cluster routed on listener '\(listenerName)'"))
            }
        case .empty:
            done(ReflectionResponse.error(code: Self.invalidArgument, "the ServerReflectionRequest asks nothing", host: host, request: bytes))
        }
    }

    /// How asking the clusters about one request ended.
    private enum Outcome {
        /// What to pass on: one cluster's answer, cut to the routed services.
        case answer([UInt8])
        /// No cluster knew; the last upstream error, if any.
        case unknown(lastError: [UInt8]?)
        /// `ReflectionQueryLimiter` refused: too many queries of this
        /// listener in flight and waiting.
        case busy
    }

    private func reply(_ outcome: Outcome, host: String, request: [UInt8], notFound: String) -> [UInt8] {
        switch outcome {
        case .answer(let answer): return answer
        case .unknown(let lastError): return lastError ?? ReflectionResponse.error(code: Self.notFound, notFound, host: host, request: request)
        case .busy: return busy(host: host, request: request)
        }
    }

    private func busy(host: String, request: [UInt8]) -> [UInt8] {
        ReflectionResponse.error(code: Self.resourceExhausted,
                                 "listener '\(listener.config.name)' has \(ReflectionQueryLimiter.maxInFlight) reflection queries to upstreams in flight "
                                    + "and \(ReflectionQueryLimiter.maxWaiting) waiting; try again",
                                 host: host, request: request)
    }

    /// Why a request naming something longer than `maxNameBytes` is
    /// refused (the name itself is not quoted back), or nil.
    package static func nameRefusal(_ request: ReflectionRequest) -> String? {
        let what: String
        let name: String
        switch request {
        case .fileByFilename(let file): (what, name) = ("file name", file)
        case .fileContainingSymbol(let symbol): (what, name) = ("symbol", symbol)
        case .fileContainingExtension(let type, _), .allExtensionNumbersOfType(let type): (what, name) = ("extension's containing type", type)
        case .listServices, .empty: return nil
        }
        let bytes = name.utf8.count
        guard bytes > maxNameBytes else { return nil }
        return "the \(what) asked for is \(bytes) bytes, over the gateway's limit of \(maxNameBytes) bytes for reflection names"
    }

    // MARK: The gateway's own files

    /// The serialized file (health.proto, a reflection.proto) named `name`.
    package static func ownFile(named name: String) -> [UInt8]? {
        GatewayFileDescriptors.all.first { $0.name == name }?.bytes
    }

    /// The gateway's own file defining `symbol`, or a parent of it
    /// (`grpc.health.v1.Health.Check` → health.proto): the file of the
    /// longest own name that is `symbol` or one of its parents, compared
    /// in place (no name is built per level).
    package static func ownFile(symbol: String) -> [UInt8]? {
        var best: (file: String, length: Int)?
        for (file, symbols) in GatewayFileDescriptors.symbolsByFile {
            for own in symbols where own.utf8.count > (best?.length ?? 0) && isSelfOrParent(own, of: symbol) {
                best = (file, own.utf8.count)
            }
        }
        return best.flatMap { ownFile(named: $0.file) }
    }

    /// `symbol` is `parent`, or starts with `parent` and a dot.
    package static func isSelfOrParent(_ parent: String, of symbol: some StringProtocol) -> Bool {
        let name = symbol.utf8
        guard name.starts(with: parent.utf8) else { return false }
        let rest = name.dropFirst(parent.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: ".")
    }

    // MARK: Which cluster

    /// The clusters the listener routes to, in route order, once each.
    private var routedClusters: [String] {
        var seen: Set<String> = []
        return listener.config.routes.map(\.cluster).filter { seen.insert($0).inserted }
    }

    /// The cluster of the first route whose path match can take a method
    /// of `service` (header matches aside: a service reachable with the
    /// right headers is still routed).
    package func cluster(forService service: some StringProtocol) -> String? {
        Self.cluster(forService: service, routes: listener.config.routes)
    }

    /// Compares in place against `/service/` (a symbol's parents are
    /// looked up one by one, and none is built as a string).
    package static func cluster(forService service: some StringProtocol, routes: [RouteConfig]) -> String? {
        for route in routes {
            let m = route.match
            if let s = m.service, s != service { continue }
            if let method = m.method, !startsWithServicePath(method, service) { continue }
            if let p = m.pathPrefix, !(servicePathStarts(with: p, service) || startsWithServicePath(p, service)) { continue }
            return route.cluster
        }
        return nil
    }

    /// `text` starts with `/service/`.
    package static func startsWithServicePath(_ text: String, _ service: some StringProtocol) -> Bool {
        let bytes = text.utf8
        guard bytes.first == UInt8(ascii: "/") else { return false }
        let rest = bytes.dropFirst()
        guard rest.starts(with: service.utf8) else { return false }
        return rest.dropFirst(service.utf8.count).first == UInt8(ascii: "/")
    }

    /// `/service/` starts with `prefix`.
    package static func servicePathStarts(with prefix: String, _ service: some StringProtocol) -> Bool {
        let bytes = prefix.utf8
        guard let first = bytes.first else { return true }
        guard first == UInt8(ascii: "/") else { return false }
        let rest = bytes.dropFirst()
        let name = service.utf8
        if rest.count <= name.count { return name.starts(with: rest) }
        return rest.count == name.count + 1 && startsWithServicePath(prefix, service)
    }

    /// Who to ask about `symbol`: the cluster routing the symbol's service
    /// (the symbol itself, or a parent: `pkg.Service.Method`), the one that
    /// answered for it before, then every routed cluster.
    private func candidates(_ remembered: String?, symbol: String?) -> [String] {
        var order: [String] = []
        if let symbol {
            var name = Substring(symbol)
            while !name.isEmpty {
                if let routed = cluster(forService: name) {
                    order.append(routed)
                    break
                }
                guard let dot = name.utf8.lastIndex(of: UInt8(ascii: ".")) else { break }
                name = name[..<dot]
            }
        }
        if let remembered { order.append(remembered) }
        order += routedClusters
        var seen: Set<String> = []
        return order.filter { seen.insert($0).inserted }
    }

    /// An endpoint of `cluster` in rotation (healthy, not ejected), else any.
    private func endpoint(of cluster: String) -> EndpointPool? {
        guard let pool = generation.clusters.first(where: { $0.config.name == cluster }) else { return nil }
        let usable = pool.endpoints.filter { $0.healthy && !$0.ejected }
        return usable.randomElement() ?? pool.endpoints.first
    }

    // MARK: Asking

    /// Runs `query` once the listener's `ReflectionQueryLimiter` lets it
    /// start; it must call the `finished` it is given once. false when
    /// refused (nothing runs).
    private func admitted(_ query: @escaping (_ finished: @escaping () -> Void) -> Void) -> Bool {
        let limiter = cache.queries
        let name = listener.config.name
        return limiter.admit(listener: name, on: eventLoop) {
            // A client that went away while this waited gives its place on.
            guard !self.closed else { return limiter.release(listener: name) }
            query { limiter.release(listener: name) }
        }
    }

    /// Whether `cluster` may describe `service`: the listener routes the
    /// service there (or it is the gateway's own).
    private func describes(_ service: String, from answering: String) -> Bool {
        Self.ownServices.contains(service) || cluster(forService: service) == answering
    }

    /// Asks each cluster in turn until one answers with something other
    /// than an error; a cluster that answered the same request with an
    /// error less than `ReflectionCache.ttl` ago is not asked again. Files
    /// pass cut to the services routed to the cluster that answered; a
    /// symbol of a service not routed there counts as unknown to it.
    private func ask(_ clusters: [String], _ bytes: [UInt8], _ request: ReflectionRequest, host: String, _ done: @escaping (Outcome) -> Void) {
        var remaining = clusters[...]
        var lastError: [UInt8]?
        let key = request.cacheKey ?? ""
        let symbol = request.symbol
        let generationNumber = generation.number
        func tryNext() {
            // A client that went away stops the search.
            guard !closed else { return }
            guard let cluster = remaining.popFirst() else { return done(.unknown(lastError: lastError)) }
            if cache.isMiss(cluster: cluster, query: key, generation: generationNumber) { return tryNext() }
            guard let endpoint = endpoint(of: cluster) else { return tryNext() }
            let started = admitted { finished in
                ReflectionUpstreamQuery.ask(endpoint, version: self.version, request: bytes, timeout: Self.upstreamTimeout) { result in
                    finished()
                    switch result {
                    case .failure(let failure):
                        Log.info("reflection: cluster did not answer; asking the next", ["cluster": cluster, "reason": failure.message])
                        tryNext()
                    case .success(let answer):
                        switch try? ReflectionResponse.parse(answer) {
                        case .error?:
                            self.cache.storeMiss(cluster: cluster, query: key, generation: generationNumber)
                            lastError = answer
                            tryNext()
                        case .files(let names)?:
                            guard let descriptors = try? ReflectionResponse.descriptors(answer) ?? [],
                                  let routed = try? RoutedFileDescriptors(descriptors, routed: { self.describes($0, from: cluster) }) else {
                                Log.info("reflection: malformed file descriptors; asking the next cluster", ["cluster": cluster])
                                return tryNext()
                            }
                            if let symbol, routed.removed.contains(where: { symbol == $0 || symbol.hasPrefix($0 + ".") }) {
                                // A service (or its method) that this cluster
                                // serves but no route sends it: not described.
                                self.cache.storeMiss(cluster: cluster, query: key, generation: generationNumber)
                                return tryNext()
                            }
                            self.cache.store(cluster: cluster, symbol: symbol, files: names, generation: generationNumber)
                            done(.answer(routed.removed.isEmpty ? answer : ReflectionResponse.files(routed.files, host: host, request: bytes)))
                        case .some:
                            done(.answer(answer))
                        case nil:
                            Log.info("reflection: malformed answer; asking the next cluster", ["cluster": cluster])
                            tryNext()
                        }
                    }
                }
            }
            if !started { done(.busy) }
        }
        tryNext()
    }

    /// Every service the listener routes, from the clusters' own lists
    /// (cached), plus the gateway's own; nil when the listener's query
    /// limiter refused a cluster's list (a list without it would be wrong).
    private func listServices(_ done: @escaping ([String]?) -> Void) {
        let clusters = routedClusters
        var lists: [String: [String]] = [:]
        // One for this loop itself: a query that ends before the loop does
        // (a dial refused at once) must not finish the list early.
        var waiting = 1
        var refused = false
        var request = ProtoWriter()
        request.string(7, "*")  // list_services
        let listRequest = request.bytes

        func merge() {
            var names = Set(Self.ownServices)
            for (lister, services) in lists {
                for service in services where cluster(forService: service) == lister { names.insert(service) }
            }
            done(names.sorted())
        }
        func finishOne() {
            waiting -= 1
            guard waiting == 0 else { return }
            if refused { done(nil) } else { merge() }
        }
        for cluster in clusters {
            if let cached = cache.services(of: cluster, generation: generation.number) {
                lists[cluster] = cached ?? []
                continue
            }
            guard let endpoint = endpoint(of: cluster) else { continue }
            waiting += 1
            let started = admitted { finished in
                ReflectionUpstreamQuery.ask(endpoint, version: self.version, request: listRequest, timeout: Self.upstreamTimeout) { result in
                    finished()
                    var services: [String]?
                    switch result {
                    case .success(let answer):
                        if case .services(let names)? = try? ReflectionResponse.parse(answer) {
                            services = names
                        } else {
                            Log.info("reflection: cluster answered list_services with something else; its services are left out", ["cluster": cluster])
                        }
                    case .failure(let failure):
                        Log.info("reflection: cluster has no reflection or is down; its services are left out", ["cluster": cluster, "reason": failure.message])
                    }
                    self.cache.store(services: services, of: cluster, generation: self.generation.number)
                    lists[cluster] = services ?? []
                    finishOne()
                }
            }
            if !started {
                refused = true
                waiting -= 1
            }
        }
        finishOne()
    }
}
