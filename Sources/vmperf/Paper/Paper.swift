/// `--paper`: Table 1 of "Inter-OS Communication on Highly Parallel Multi-Core Architectures" on this machine.
struct Paper {
    let options: Options
    let report: Report

    init(_ options: Options, _ report: Report) {
        self.options = options
        self.report = report
    }

    func run() throws { throw Failure("--paper is not built yet") }

    static func runPeer(_ how: String, _ options: Options) throws { throw Failure("--paper is not built yet") }
}
