/// Why an attempt of a call was made (the `kind` label of
/// `meshgate_upstream_attempts_total`).
public enum AttemptKind: Int, CaseIterable, Sendable {
    /// The call's first attempt.
    case first
    /// After a failed attempt, by the retry plugin's decision.
    case retry
    /// Scheduled by a hedging plugin (`call_start_attempt`), or a hedge's
    /// "next attempt now" decision.
    case hedge
    /// The upstream refused the stream (REFUSED_STREAM, or GOAWAY left it
    /// unprocessed): sent again once by the host itself.
    case transparent

    public var label: String {
        switch self {
        case .first: "first"
        case .retry: "retry"
        case .hedge: "hedge"
        case .transparent: "transparent"
        }
    }
}
