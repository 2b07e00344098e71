import ArgumentParser
import Glibc
import VMSock

/// `vmsockd`: parses the command line and runs the broker (`IvshmemServer`) in the foreground until SIGINT or
/// SIGTERM. Prints one line on standard output once clients may connect; every failure is one line on standard
/// error and exit status 1.
@main
enum Entrypoint {
    static func main() {
        let options: Options
        do {
            options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
        } catch {
            if Options.exitCode(for: error) == .success {
                print(Options.fullMessage(for: error))
                exit(0)
            }
            fail("\(Options.message(for: error)) (usage: vmsockd --help)")
        }
        signal(SIGPIPE, SIG_IGN)  // a closed stdout or stderr must not kill the broker
        let server: IvshmemServer
        do throws(VMSockError) {
            server = try IvshmemServer(options.serverConfiguration)
            try server.stopOnTerminationSignals()
            server.raiseDescriptorLimit()
        } catch {
            fail(error.message)
        }
        print("vmsockd: ready on \(options.socket) (\(server.summary))")
        fflush(nil)  // stdout is a pipe for whoever waits for this line: push it out now
        do throws(VMSockError) {
            try server.run()
        } catch {
            fail(error.message)
        }
        exit(0)
    }

    /// One line on standard error, and exit status 1.
    static func fail(_ message: String) -> Never {
        let bytes = Array("vmsockd: \(message)\n".utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(1)
    }
}
