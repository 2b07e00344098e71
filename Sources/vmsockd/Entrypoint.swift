import ArgumentParser
import Glibc
import VMSock

/// `vmsockd`: parses the command line and runs the broker (`IvshmemServer`, one per `--socket`, each with a region
/// of its own) in the foreground until SIGINT or SIGTERM. Prints one line on standard output once clients may
/// connect; every failure is one line on standard error and exit status 1.
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
        var servers: [IvshmemServer] = []
        do throws(VMSockError) {
            for configuration in options.serverConfigurations { servers.append(try IvshmemServer(configuration)) }
            // The signals stop the first; the first's end stops the others.
            try servers[0].stopOnTerminationSignals()
            servers[0].raiseDescriptorLimit()
            for server in servers.dropFirst() { try server.start() }
        } catch {
            for server in servers { server.stopAndWait() }
            servers.removeAll()  // their socket files go with them
            fail(error.message)
        }
        let each = servers.count > 1 ? ", each" : ""
        print("vmsockd: ready on \(options.socket.joined(separator: ", ")) (\(servers[0].summary)\(each))")
        fflush(nil)  // stdout is a pipe for whoever waits for this line: push it out now
        var failure: VMSockError? = nil
        do throws(VMSockError) {
            try servers[0].run()
        } catch {
            failure = error
        }
        for server in servers.dropFirst() { server.stopAndWait() }
        servers.removeAll()
        if let failure { fail(failure.message) }
        exit(0)
    }

    /// One line on standard error, and exit status 1.
    static func fail(_ message: String) -> Never {
        let bytes = Array("vmsockd: \(message)\n".utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(1)
    }
}
