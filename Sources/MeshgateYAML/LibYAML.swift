internal import CYAML

/// The libyaml the process runs with.
public enum LibYAML {
    public static var version: String {
        guard let text = yaml_get_version_string() else { return "unknown" }
        return String(cString: text)
    }
}
