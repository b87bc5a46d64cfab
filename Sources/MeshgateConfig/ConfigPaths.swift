/// Paths in a config file are relative to the file's directory.
public enum ConfigPaths {
    /// The directory part of `file` ("." when it has none).
    public static func directory(of file: String) -> String {
        guard let slash = file.lastIndex(of: "/") else { return "." }
        return String(file[..<slash])
    }

    /// `path` as written in a config in `directory`.
    public static func resolve(_ path: String, against directory: String) -> String {
        path.hasPrefix("/") ? path : "\(directory)/\(path)"
    }
}
