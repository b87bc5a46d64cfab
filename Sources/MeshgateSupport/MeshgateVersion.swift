import FilterABI
import MeshgateHTTP2
import MeshgateTLS
import MeshgateYAML

/// What `meshgate --version` prints: this build, the filter ABI it offers
/// plugins, and the C libraries the process actually runs with (which can
/// differ from those it was built against).
public enum MeshgateVersion {
    /// This build's version (changed with each release).
    public static let version = "0.9.0"
    public static let abiMajor = Int(MG_ABI_MAJOR)
    public static let abiMinor = Int(MG_ABI_MINOR)

    public static var text: String {
        """
        meshgate \(version)
        filter ABI \(abiMajor).\(abiMinor) (loads plugins built for \(abiMajor).0 to \(abiMajor).\(abiMinor))
        nghttp2 \(NGHTTP2Library.version)
        \(OpenSSLLibrary.version)
        libyaml \(LibYAML.version)
        """
    }
}
