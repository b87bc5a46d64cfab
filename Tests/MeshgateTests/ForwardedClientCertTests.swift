import Testing
@testable import MeshgateTLS
import PluginKit

/// x-forwarded-client-cert as the gateway writes it and plugins read it.
@Suite struct ForwardedClientCertTests {
    func value(_ key: StaticString, _ header: String) -> String? {
        var header = header
        return header.withUTF8 { ForwardedClientCert.value(key, in: UnsafeRawBufferPointer($0))?.text }
    }

    @Test func readsPlainAndQuotedValues() {
        let header = #"Subject="CN=client,O=Example";URI=spiffe://meshgate.local/client;DNS=client.example"#
        #expect(value("URI", header) == "spiffe://meshgate.local/client")
        #expect(value("dns", header) == "client.example")
        #expect(value("Subject", header) == "CN=client,O=Example")
        #expect(value("Hash", header) == nil)
    }

    @Test func aSeparatorInsideQuotesIsPartOfTheValue() {
        // The issue's case: a DNS name holding ";URI=" is no URI.
        let smuggled = #"Subject="CN=smuggler";DNS="x;URI=spiffe://victim;y""#
        #expect(value("URI", smuggled) == nil)
        #expect(value("DNS", smuggled) == "x;URI=spiffe://victim;y")
        // Nor inside the subject, nor after an escaped quote.
        #expect(value("URI", #"Subject="CN=a;URI=spiffe://victim""#) == nil)
        #expect(value("URI", #"Subject="CN=\";URI=spiffe://victim";DNS=d"#) == nil)
        #expect(value("Subject", #"Subject="CN=\";URI=spiffe://victim";DNS=d"#) == #"CN=";URI=spiffe://victim"#)
        #expect(value("DNS", #"Subject="a\\";DNS=d"#) == "d")
    }

    @Test func onlyTheFirstElementIsRead() {
        #expect(value("URI", "By=spiffe://proxy;DNS=a,URI=spiffe://second") == nil)
        #expect(value("DNS", #"DNS="a,b";URI=u,DNS=c"#) == "a,b")
    }

    @Test func malformedHeadersNameNobody() {
        #expect(value("URI", #"DNS="unterminated;URI=spiffe://victim"#) == nil)
        #expect(value("URI", #"DNS="a"junk;URI=spiffe://victim"#) == nil)
    }

    /// Whatever the names hold, what the gateway writes reads back as the
    /// same names: quoting cannot be escaped from.
    @Test func whatTheGatewayWritesReadsBack() {
        let nasty = ["plain", "a;URI=spiffe://victim", "q\"uote", "back\\slash\\", "x,y=z", "sp ace", "\\\";URI=evil", "é"]
        for uri in nasty {
            for dns in nasty {
                let identity = TLSPeerIdentity(subject: "CN=\(dns)", commonName: dns, dnsNames: [dns], uris: [uri])
                let header = identity.forwardedClientCert
                #expect(value("URI", header) == uri, "\(header)")
                #expect(value("DNS", header) == dns, "\(header)")
                #expect(value("Subject", header) == "CN=\(dns)", "\(header)")
            }
        }
        let noURI = TLSPeerIdentity(subject: "CN=s", commonName: "s", dnsNames: ["x;URI=spiffe://victim;y"], uris: [])
        #expect(value("URI", noURI.forwardedClientCert) == nil)
    }
}
