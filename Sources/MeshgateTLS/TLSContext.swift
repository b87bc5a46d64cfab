internal import COpenSSL

/// An OpenSSL `SSL_CTX` built from PEM files: TLS 1.2 and 1.3 only, a
/// modern cipher list (ECDHE with AES-GCM or ChaCha20 for TLS 1.2; X25519,
/// P-256 and P-384 key exchange: Mozilla's "intermediate" profile), ALPN
/// `h2` (required on the server side), peer verification against a CA
/// bundle.
///
/// `@unchecked Sendable`: the context is fully set up in `init` and only
/// used to create connections afterwards, which OpenSSL allows from any
/// thread.
public final class TLSContext: @unchecked Sendable {
    public enum Role: Sendable { case server, client }

    /// Server side: whether clients present certificates.
    public enum ClientAuth: String, Sendable {
        case none, optional, required
    }

    let pointer: OpaquePointer
    public let role: Role

    /// - certificateChain, privateKey: PEM files (required for a server;
    ///   for a client, the certificate it presents for mutual TLS).
    /// - trustedCAs: PEM bundle that verifies the peer (a client without
    ///   one uses the system's).
    public init(role: Role, certificateChain: String?, privateKey: String?, trustedCAs: String?,
                clientAuth: ClientAuth = .none) throws(TLSError) {
        self.role = role
        guard let ctx = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw TLSError.openSSL("cannot create a TLS context")
        }
        pointer = ctx
        guard mg_ssl_ctx_set_min_tls12(ctx) == 1 else { throw TLSError.openSSL("cannot require TLS 1.2 or later") }
        mg_ssl_ctx_set_modern_options(ctx)
        guard mg_ssl_ctx_set_groups(ctx) == 1 else { throw TLSError.openSSL("cannot set the key exchange groups") }
        guard SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL") == 1 else {
            throw TLSError.openSSL("cannot set the cipher list")
        }
        if let certificateChain {
            guard SSL_CTX_use_certificate_chain_file(ctx, certificateChain) == 1 else {
                throw TLSError.openSSL("cannot load the certificate chain \(certificateChain)")
            }
            guard let privateKey else { throw TLSError("a certificate needs its private key (key)") }
            guard SSL_CTX_use_PrivateKey_file(ctx, privateKey, SSL_FILETYPE_PEM) == 1 else {
                throw TLSError.openSSL("cannot load the private key \(privateKey)")
            }
            guard SSL_CTX_check_private_key(ctx) == 1 else {
                throw TLSError.openSSL("the private key \(privateKey) does not match the certificate \(certificateChain)")
            }
        } else if role == .server {
            throw TLSError("a TLS listener needs a certificate (cert) and its key (key)")
        }
        switch role {
        case .server:
            mg_ssl_ctx_require_alpn_h2(ctx)
            // OpenSSL refuses to resume a session (TLS 1.2 id or 1.3 ticket)
            // on a context that verifies peers without a session id context:
            // a reconnecting mTLS client would fail its handshake. Sessions
            // stay per context, so a rotated certificate or CA bundle (a new
            // context, new ticket keys) never resumes an older one.
            guard SSL_CTX_set_session_id_context(ctx, Self.sessionIDContext, UInt32(Self.sessionIDContextLength)) == 1 else {
                throw TLSError.openSSL("cannot set the session id context")
            }
            if clientAuth != .none {
                guard let trustedCAs else { throw TLSError("client_auth \(clientAuth.rawValue) needs a CA bundle (ca) to verify clients") }
                try Self.loadCAs(ctx, trustedCAs)
                if let names = SSL_load_client_CA_file(trustedCAs) { SSL_CTX_set_client_CA_list(ctx, names) }
                let mode = SSL_VERIFY_PEER | (clientAuth == .required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0)
                SSL_CTX_set_verify(ctx, Int32(mode), nil)
            }
        case .client:
            guard mg_ssl_ctx_offer_alpn_h2(ctx) == 0 else { throw TLSError.openSSL("cannot offer ALPN h2") }
            if let trustedCAs {
                try Self.loadCAs(ctx, trustedCAs)
            } else {
                SSL_CTX_set_default_verify_paths(ctx)
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        }
        _ = TLSError.drainErrorQueue()
    }

    private static let sessionIDContextLength = 8
    private static let sessionIDContext: [UInt8] = Array("meshgate".utf8)

    private static func loadCAs(_ ctx: OpaquePointer, _ path: String) throws(TLSError) {
        guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else {
            throw TLSError.openSSL("cannot load the CA bundle \(path)")
        }
    }

    deinit {
        SSL_CTX_free(pointer)
    }
}
