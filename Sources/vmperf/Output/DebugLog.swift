import VMPerfSupport

/// `-d`: debugging lines (the control messages each way, the server's rate checks and idle restarts), where
/// errors go (stderr, or --logfile), so that a -J document on stdout stays whole.
struct DebugLog: Sendable {
    static let off = DebugLog(nil)

    private let report: Report?

    init(_ report: Report?) { self.report = report }

    var isOn: Bool { report != nil }

    func callAsFunction(_ text: @autoclosure () -> String) {
        report?.message("vmperf: debug - " + text() + "\n")
    }
}
