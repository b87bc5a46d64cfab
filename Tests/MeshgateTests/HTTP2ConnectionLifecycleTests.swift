import Testing
@testable import MeshgateHTTP2

/// Every rule of `HTTP2ConnectionLifecycle` (and of a stream's
/// `StreamState.Receiving`/`Sending`), without a socket: which event
/// moves where, what it asks the connection to do, and what each phase
/// says is true.
@Suite struct HTTP2ConnectionLifecycleTests {
    typealias Lifecycle = HTTP2ConnectionLifecycle

    @Test func aServerStartsAtTheClientsFirstBytesAndSubmitsItsSettingsThen() {
        var life = Lifecycle()
        #expect(life.phase == .idle)
        #expect(!life.canOpenStreams && !life.hasStarted && life.readsInput)
        let start = life.start()
        #expect(start == .submitSettingsAndFlush)
        #expect(life.phase == .open)
        #expect(life.canOpenStreams && life.hasStarted)
        let startAgain = life.start()
        #expect(startAgain == .none, "SETTINGS once")
    }

    @Test func aClientQueuesSettingsBeforeItsConnectAndFlushesThemAtTheStart() {
        var life = Lifecycle()
        let queued = life.queueSettings()
        #expect(queued)
        let queuedAgain = life.queueSettings()
        #expect(!queuedAgain, "SETTINGS once")
        #expect(life.phase == .settingsQueued)
        #expect(life.canOpenStreams, "requests may queue behind the SETTINGS")
        #expect(!life.hasStarted, "nothing is written before the connect")
        let start = life.start()
        #expect(start == .flush, "no second SETTINGS")
        #expect(life.phase == .open)
    }

    @Test func aDrainBeforeTheStartClosesForGoAwayMayNotBeTheFirstFrame() {
        var server = Lifecycle()
        let shutdown = server.beginGracefulShutdown()
        #expect(shutdown == .close)
        var client = Lifecycle()
        _ = client.queueSettings()
        let clientShutdown = client.beginGracefulShutdown()
        #expect(clientShutdown == .close)
    }

    @Test func aDrainSendsGoAwayOnceAndStopsNewStreams() {
        var life = Lifecycle()
        _ = life.start()
        let shutdown = life.beginGracefulShutdown()
        #expect(shutdown == .sendGoAway)
        #expect(life.phase == .goingAway(.sent))
        #expect(life.isShuttingDown && !life.receivedGoAway && !life.canOpenStreams)
        #expect(life.hasStarted && life.readsInput, "open streams finish")
        let shutdownAgain = life.beginGracefulShutdown()
        #expect(shutdownAgain == .none)
    }

    @Test func thePeersGoAwayAndOursAddUp() {
        var life = Lifecycle()
        _ = life.start()
        life.goAwayReceived()
        #expect(life.phase == .goingAway(.received))
        #expect(life.receivedGoAway && !life.isShuttingDown && !life.canOpenStreams)
        life.goAwayReceived()
        #expect(life.phase == .goingAway(.received))
        let shutdown = life.beginGracefulShutdown()
        #expect(shutdown == .sendGoAway, "we still say ours")
        #expect(life.phase == .goingAway(.both))
        #expect(life.receivedGoAway && life.isShuttingDown)
    }

    @Test func aProtocolErrorsGoAwayLeavesNoDrainToStart() {
        var life = Lifecycle()
        _ = life.start()
        life.goAwaySent()
        #expect(life.phase == .goingAway(.sent))
        let shutdown = life.beginGracefulShutdown()
        #expect(shutdown == .none)
    }

    @Test func goAwayBeforeTheStartIsNoEvent() {
        var life = Lifecycle()
        life.goAwayReceived()
        life.goAwaySent()
        #expect(life.phase == .idle)
    }

    @Test func aCloseIsQueuedOnceReadsNothingMoreAndKeepsWhatWasSaid() {
        var life = Lifecycle()
        _ = life.start()
        life.goAwayReceived()
        let closing = life.closeRequested()
        #expect(closing)
        let closingAgain = life.closeRequested()
        #expect(!closingAgain, "one close")
        #expect(life.phase == .closing(.afterStart(goAway: .received)))
        #expect(!life.readsInput && !life.canOpenStreams && !life.isClosed)
        #expect(life.hasStarted, "frames already produced still leave")
        #expect(life.receivedGoAway, "the pool still sees why")
        let shutdown = life.beginGracefulShutdown()
        #expect(shutdown == .none)
        let start = life.start()
        #expect(start == .none)
    }

    @Test func aCloseBeforeTheStartWritesNothing() {
        var life = Lifecycle()
        _ = life.queueSettings()
        let closing = life.closeRequested()
        #expect(closing)
        #expect(life.phase == .closing(.beforeStart))
        #expect(!life.hasStarted && !life.canOpenStreams)
        let start = life.start()
        #expect(start == .none, "a connect after the close starts nothing")
    }

    @Test func theEndComesOnceFromAnyPhase() {
        let phases: [(String, (inout Lifecycle) -> Void)] = [
            ("idle", { _ in }),
            ("settingsQueued", { _ = $0.queueSettings() }),
            ("open", { _ = $0.start() }),
            ("goingAway", { _ = $0.start(); $0.goAwayReceived() }),
            ("closing", { _ = $0.start(); _ = $0.closeRequested() }),
        ]
        for (name, reach) in phases {
            var life = Lifecycle()
            reach(&life)
            let ended = life.ended()
            #expect(ended, "\(name)")
            let endedAgain = life.ended()
            #expect(!endedAgain, "\(name): once")
            #expect(life.isClosed && !life.readsInput && !life.hasStarted && !life.canOpenStreams, "\(name)")
            let closing = life.closeRequested()
            #expect(!closing, "\(name): nothing left to close")
            let start = life.start(), shutdown = life.beginGracefulShutdown()
            #expect(start == .none && shutdown == .none, "\(name)")
        }
    }

    // MARK: Streams

    @Test func aHeaderBlockOpensOrEndsTheReceivingSide() {
        typealias Receiving = StreamState.Receiving
        #expect(Receiving.awaitingHead.headerBlockEnded(endStream: false) == .open)
        #expect(Receiving.awaitingHead.headerBlockEnded(endStream: true) == .ended, "Trailers-Only")
        #expect(Receiving.open.headerBlockEnded(endStream: true) == .ended, "trailers")
        #expect(Receiving.open.headerBlockEnded(endStream: false) == .open)
        #expect(Receiving.ended.headerBlockEnded(endStream: false) == .ended, "an end stays")
    }

    @Test func onlyAnOpenBodyTakesBytesAndTheEnd() {
        typealias Sending = StreamState.Sending
        let takes = [Sending.idle, .body, .bodyDeferred, .ending, .ended, .reset].filter(\.takesBody)
        #expect(takes == [.body, .bodyDeferred])
    }

    @Test func aReusedStreamStateStartsOver() {
        let state = StreamState(id: 1, delegate: nil)
        state.receiving = .ended
        state.sending = .reset
        state.reuse(id: 3, delegate: nil)
        #expect(state.receiving == .awaitingHead && state.sending == .idle && state.id == 3)
    }
}
