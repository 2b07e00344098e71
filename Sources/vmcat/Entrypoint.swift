import Glibc

/// `vmcat`: netcat over vmsock, with OpenBSD nc's flags (Debian's netcat-openbsd). Parses the command line and
/// runs; every failure is one line on stderr and exit status 1.
@main
enum Entrypoint {
    static func main() {
        let options: Options
        do throws(Options.UsageError) {
            options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
        } catch {
            // One line, as for every failure: the problem and where the usage is.
            StandardIO.report("vmcat: \(error.message) (usage: vmcat -h)")
            exit(1)
        }
        if options.help {
            print(Options.help)
            exit(0)
        }
        do throws(Netcat.Failure) {
            try Netcat.run(options)
        } catch {
            if !error.quiet { StandardIO.report("vmcat: \(error.message)") }
            exit(1)
        }
        exit(0)
    }
}
