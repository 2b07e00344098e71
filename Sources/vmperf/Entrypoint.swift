import ArgumentParser
import Foundation
import VMPerfPaper
import VMPerfSupport
import VMSock

/// `vmperf`: iperf3 for vmsock. Parses the command line and hands it to a mode; every failure is one line on
/// stderr (or an `error` key with -J) and exit status 1, as iperf3 does.
@main
enum Entrypoint {
    static func main() {
        let options: Options
        do {
            options = try Options.parse(Options.splittingAttachedValues(Array(CommandLine.arguments.dropFirst())))
        } catch {
            if Options.exitCode(for: error) == .success {
                print(Options.fullMessage(for: error))
                exit(0)
            }
            // An iperf3 flag vmperf does not take: say why, and what to use, rather than "Unknown option".
            if let unsupported = Options.unsupportedIperf3Flag(Array(CommandLine.arguments.dropFirst())) {
                Report.standardError("vmperf: error - \(unsupported)\n")
                exit(1)
            }
            Report.standardError("vmperf: error - \(Options.message(for: error)) (usage: vmperf --help)\n")
            exit(1)
        }
        if options.showVersion {
            print(Options.configuration.version)
            exit(0)
        }
        signal(SIGPIPE, SIG_IGN)
        let report: Report
        do {
            report = try Report(logfile: options.logfile, json: options.json, title: options.title, timestampFormat: options.timestamps)
        } catch {
            Report.standardError("vmperf: error - \(error)\n")
            exit(1)
        }
        do {
            try Daemon.start(daemon: options.daemon, pidFile: options.pidfile, keeping: report.descriptor)  // before any thread starts
        } catch {
            // On the terminal, whatever --logfile says (a refusal comes before -D lets go of it); and in the log
            // too, where a daemon's errors go once it has.
            Report.standardError("vmperf: error - \(error)\n")
            if report.descriptor != STDOUT_FILENO { report.message("vmperf: error - \(error)\n") }
            exit(1)
        }
        do {
            switch options.role {
            case .server: try Server(options, report).run()
            case .client(let host): try Client(options, host: host, report).run()
            case .compare: try Compare(options, report).run()
            case .paper: try PaperBenchmark(runs: options.runs, iterations: options.iterations, report: report).run()
            case .paperPeer(let how): try PaperBenchmark.runPeer(how)
            case .connections(let count): try ConnectRate(options, count: count, report).run()
            case .connectionsListener(let count):
                try ConnectionsListener.serve(count: count, rounds: options.connectionRoundList.count, ringSize: options.connectionRingSize)
            }
        } catch {
            if options.json {
                // As iperf3 writes it when a test fails: what is known of the start, nothing measured.
                let start = JSON.object([
                    ("connected", .array([])), ("version", .string(JSONDocument.version)),
                    ("system_info", .string(JSONDocument.systemInfo)), ("timestamp", JSONDocument.timestamp()),
                ])
                report.document(.object([("start", start), ("intervals", .array([])), ("end", .object([])),
                                         ("error", .string(String(describing: error)))]))
            } else {
                report.message("vmperf: error - \(error)\n")
            }
            exit(1)
        }
        exit(0)
    }
}
