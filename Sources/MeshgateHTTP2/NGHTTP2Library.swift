internal import CNGHTTP2

/// The nghttp2 the process runs with (not the headers it was built with).
public enum NGHTTP2Library {
    public static var version: String {
        guard let info = nghttp2_version(0), let text = info.pointee.version_str else { return "unknown" }
        return String(cString: text)
    }
}
