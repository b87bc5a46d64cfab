internal import COpenSSL

/// The OpenSSL the process runs with, e.g. "OpenSSL 3.0.17 1 Jul 2025".
public enum OpenSSLLibrary {
    public static var version: String {
        guard let text = OpenSSL_version(OPENSSL_VERSION) else { return "unknown" }
        return String(cString: text)
    }
}
