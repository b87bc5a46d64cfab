#ifndef MESHGATE_COPENSSL_SHIM_H
#define MESHGATE_COPENSSL_SHIM_H
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

/* OpenSSL macros (and a callback) that Swift cannot call directly, as
 * static inline functions. Only MeshgateTLS (the one OpenSSL wrapper) sees them. */

static inline int mg_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

static inline void mg_ssl_ctx_set_modern_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
}

/* Key exchange groups: Mozilla's "intermediate" set. */
static inline int mg_ssl_ctx_set_groups(SSL_CTX *ctx) {
    return (int)SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
}

static inline long mg_bio_pending(BIO *bio) { return (long)BIO_ctrl_pending(bio); }

static inline int mg_ssl_set_sni(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

/* Server ALPN: "h2" or nothing (the handshake fails with
 * no_application_protocol: gRPC needs HTTP/2). */
static int mg_alpn_select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                             const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int len = in[i];
        if (i + 1 + len > inlen) break;
        if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static inline void mg_ssl_ctx_require_alpn_h2(SSL_CTX *ctx) {
    SSL_CTX_set_alpn_select_cb(ctx, mg_alpn_select_h2, NULL);
}

static inline int mg_ssl_ctx_offer_alpn_h2(SSL_CTX *ctx) {
    static const unsigned char protos[] = { 2, 'h', '2' };
    return SSL_CTX_set_alpn_protos(ctx, protos, sizeof protos);
}

/* The `index`-th subject alternative name of `cert`: its GEN_* type into
 * *type, its bytes copied into out[0..capacity). Returns the byte count (0
 * for a type without bytes here), -1 when the name does not fit (never
 * truncated: a prefix could match an allow list), or -2 past the last
 * name. The caller owns `out`; nothing refers to OpenSSL's memory after
 * the call. */
static inline int mg_x509_san(X509 *cert, int index, int *type, unsigned char *out, int capacity) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) return -2;
    int result = -2;
    if (index < sk_GENERAL_NAME_num(names)) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, index);
        *type = name->type;
        const ASN1_STRING *value = NULL;
        if (name->type == GEN_DNS || name->type == GEN_URI || name->type == GEN_EMAIL) value = name->d.ia5;
        else if (name->type == GEN_IPADD) value = name->d.iPAddress;
        result = 0;
        if (value) {
            int n = ASN1_STRING_length(value);
            if (n > capacity) {
                result = -1;
            } else {
                memcpy(out, ASN1_STRING_get0_data(value), (size_t)n);
                result = n;
            }
        }
    }
    GENERAL_NAMES_free(names);
    return result;
}

/* The subject's common name as UTF-8 into `out` (the last CN, the most
 * specific): its length, 0 when there is none, -1 when it does not fit. The
 * bytes are copied whole, an embedded NUL included, for the caller to judge. */
static inline int mg_x509_common_name(X509 *cert, unsigned char *out, int capacity) {
    X509_NAME *name = X509_get_subject_name(cert);
    if (!name) return 0;
    int index = -1, last = -1;
    while ((index = X509_NAME_get_index_by_NID(name, NID_commonName, index)) >= 0) last = index;
    if (last < 0) return 0;
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0) return -1;
    int result = n <= capacity ? n : -1;
    if (result > 0) memcpy(out, utf8, (size_t)n);
    OPENSSL_free(utf8);
    return result;
}

/* The subject in RFC 2253 form ("CN=client,O=Example"), as Envoy writes it
 * in x-forwarded-client-cert: its length, or -1 (none, or too long). */
static inline int mg_x509_subject_rfc2253(X509 *cert, char *out, int capacity) {
    X509_NAME *name = X509_get_subject_name(cert);
    BIO *bio = name ? BIO_new(BIO_s_mem()) : NULL;
    if (!bio) return -1;
    int result = -1;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n >= 0 && n <= capacity) {
            memcpy(out, data, (size_t)n);
            result = (int)n;
        }
    }
    BIO_free(bio);
    return result;
}
#endif
