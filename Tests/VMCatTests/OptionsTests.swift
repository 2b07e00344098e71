import Foundation
import VMSock
import XCTest

@testable import vmcat

/// vmcat's command line, table by table: what OpenBSD nc's getopt accepts and what it makes of it, and what it
/// rejects with which message.
final class OptionsTests: XCTestCase {
    /// Options with a few fields set; the rest keep their defaults.
    private static func options(_ set: (inout Options) -> Void) -> Options {
        var options = Options()
        set(&options)
        return options
    }

    func testAcceptedForms() throws {
        let cases: [([String], Options)] = [
            // Connect: destination and port.
            (["127.0.0.1", "80"], Self.options { $0.host = "127.0.0.1"; $0.port = 80 }),
            (["localhost", "65535"], Self.options { $0.host = "localhost"; $0.port = 65535 }),
            // Flags alone and grouped, in any order; operands anywhere.
            (["-N", "-v", "h", "80"], Self.options { $0.shutdownOnEOF = true; $0.verbose = true; $0.host = "h"; $0.port = 80 }),
            (["-Nv", "h", "80"], Self.options { $0.shutdownOnEOF = true; $0.verbose = true; $0.host = "h"; $0.port = 80 }),
            (["h", "-vN", "80"], Self.options { $0.shutdownOnEOF = true; $0.verbose = true; $0.host = "h"; $0.port = 80 }),
            (["-zv", "h", "80"], Self.options { $0.scanOnly = true; $0.verbose = true; $0.host = "h"; $0.port = 80 }),
            (["-d", "h", "80"], Self.options { $0.noStdin = true; $0.host = "h"; $0.port = 80 }),
            // -4 and -6: the last one counts, as in nc.
            (["-4", "h", "80"], Self.options { $0.family = .v4; $0.host = "h"; $0.port = 80 }),
            (["-46", "h", "80"], Self.options { $0.family = .v6; $0.host = "h"; $0.port = 80 }),
            (["-6", "-4", "h", "80"], Self.options { $0.family = .v4; $0.host = "h"; $0.port = 80 }),
            // Values separate or attached, at the end of a group too; a value may start with '-'.
            (["-w", "5", "h", "80"], Self.options { $0.timeout = 5; $0.host = "h"; $0.port = 80 }),
            (["-w5", "h", "80"], Self.options { $0.timeout = 5; $0.host = "h"; $0.port = 80 }),
            (["h", "80", "-w", "0.5"], Self.options { $0.timeout = 0.5; $0.host = "h"; $0.port = 80 }),
            (["-vw2", "h", "80"], Self.options { $0.verbose = true; $0.timeout = 2; $0.host = "h"; $0.port = 80 }),
            (["-q", "-1", "h", "80"], Self.options { $0.quitAfterEOF = -1; $0.shutdownOnEOF = true; $0.host = "h"; $0.port = 80 }),
            (["-q-1", "h", "80"], Self.options { $0.quitAfterEOF = -1; $0.shutdownOnEOF = true; $0.host = "h"; $0.port = 80 }),
            (["-q", "0", "h", "80"], Self.options { $0.quitAfterEOF = 0; $0.shutdownOnEOF = true; $0.host = "h"; $0.port = 80 }),
            // -p and -s without -l: where the connection leaves from.
            (["-p", "5000", "h", "80"], Self.options { $0.sourcePort = 5000; $0.host = "h"; $0.port = 80 }),
            (["-s", "127.0.0.1", "h", "80"], Self.options { $0.sourceAddress = "127.0.0.1"; $0.host = "h"; $0.port = 80 }),
            (["-s::1", "-p", "5000", "h", "80"], Self.options { $0.sourceAddress = "::1"; $0.sourcePort = 5000; $0.host = "h"; $0.port = 80 }),
            // -s with -l: the address to listen on.
            (["-l", "-s", "127.0.0.1", "-p", "7000"], Self.options { $0.listen = true; $0.sourceAddress = "127.0.0.1"; $0.sourcePort = 7000; $0.host = "127.0.0.1"; $0.port = 7000 }),
            // Listen: a port, or -p, or an address and either.
            (["-l", "7000"], Self.options { $0.listen = true; $0.port = 7000 }),
            (["-l", "0"], Self.options { $0.listen = true; $0.port = 0 }),
            (["-l", "-p", "7000"], Self.options { $0.listen = true; $0.sourcePort = 7000; $0.port = 7000 }),
            (["-lp7000"], Self.options { $0.listen = true; $0.sourcePort = 7000; $0.port = 7000 }),
            (["-lp", "7000"], Self.options { $0.listen = true; $0.sourcePort = 7000; $0.port = 7000 }),
            (["-l", "::1", "7000"], Self.options { $0.listen = true; $0.host = "::1"; $0.port = 7000 }),
            (["-l", "-p", "7000", "::1"], Self.options { $0.listen = true; $0.sourcePort = 7000; $0.host = "::1"; $0.port = 7000 }),
            (["-lk", "127.0.0.1", "7000"], Self.options { $0.listen = true; $0.keepListening = true; $0.host = "127.0.0.1"; $0.port = 7000 }),
            (["-k", "-l", "7000"], Self.options { $0.listen = true; $0.keepListening = true; $0.port = 7000 }),
            // Our long options: separate or with '=', the policy in any case.
            (["--transport", "shm", "h", "80"], Self.options { $0.transport = .shm; $0.host = "h"; $0.port = 80 }),
            (["--transport=TCP", "h", "80"], Self.options { $0.transport = .tcp; $0.host = "h"; $0.port = 80 }),
            (["h", "80", "--transport", "auto"], Self.options { $0.transport = .auto; $0.host = "h"; $0.port = 80 }),
            (["--ring-size", "4096", "h", "80"], Self.options { $0.ringSize = 4096; $0.host = "h"; $0.port = 80 }),
            (["--ring-size=67108864", "h", "80"], Self.options { $0.ringSize = 64 << 20; $0.host = "h"; $0.port = 80 }),
            // `--` ends the options; a lone '-' is an operand.
            (["-v", "--", "h", "80"], Self.options { $0.verbose = true; $0.host = "h"; $0.port = 80 }),
            (["-", "80"], Self.options { $0.host = "-"; $0.port = 80 }),
            // Help: the operands are not looked at.
            (["-h"], Self.options { $0.help = true }),
            (["--help"], Self.options { $0.help = true }),
            (["-vh", "h"], Self.options { $0.verbose = true; $0.help = true }),
        ]
        for (arguments, expected) in cases {
            XCTAssertEqual(try Options.parse(arguments), expected, "\(arguments)")
        }
    }

    func testRejectedFormsAndTheirMessages() {
        let cases: [([String], String)] = [
            // Options nc does not have, as getopt words it.
            (["-x", "h", "80"], "invalid option -- 'x'"),
            (["-lx", "80"], "invalid option -- 'x'"),
            (["h", "-1"], "invalid option -- '1'"),
            (["--frobnicate", "h", "80"], "unrecognized option '--frobnicate'"),
            (["--transport-x", "shm", "h", "80"], "unrecognized option '--transport-x'"),
            // A value missing at the end.
            (["h", "80", "-w"], "option requires an argument -- 'w'"),
            (["-l", "-p"], "option requires an argument -- 'p'"),
            (["-q"], "option requires an argument -- 'q'"),
            (["h", "80", "--transport"], "option requires an argument -- 'transport'"),
            (["h", "80", "--ring-size"], "option requires an argument -- 'ring-size'"),
            // Bad values.
            (["-w", "0", "h", "80"], "timeout 0 is invalid"),
            (["-w", "-2", "h", "80"], "timeout -2 is invalid"),
            (["-w", "soon", "h", "80"], "timeout soon is invalid"),
            (["-w", "inf", "h", "80"], "timeout inf is invalid"),
            (["-q", "x", "h", "80"], "quit timeout x is invalid"),
            // Beyond nc's limit: the milliseconds would not fit, and converting them trapped (Fuzz/vmcat-options).
            (["-w", "1e300", "h", "80"], "timeout 1e300 is too large (at most 2147483)"),
            (["-w", "2147484", "h", "80"], "timeout 2147484 is too large (at most 2147483)"),
            (["-q", "1e300", "h", "80"], "quit timeout 1e300 is too large (at most 2147483)"),
            (["--transport", "udp", "h", "80"], "invalid transport: udp (use auto, shm, tcp or ivshmem)"),
            (["--ring-size", "1000", "h", "80"], "invalid ring size: 1000 (a power of two, 4096 to 67108864)"),
            (["--ring-size=6000", "h", "80"], "invalid ring size: 6000 (a power of two, 4096 to 67108864)"),
            (["--ring-size", "128M", "h", "80"], "invalid ring size: 128M (a power of two, 4096 to 67108864)"),
            (["--ring-size", "134217728", "h", "80"], "invalid ring size: 134217728 (a power of two, 4096 to 67108864)"),
            // Ports.
            (["h", "99999"], "port number too large: 99999"),
            (["h", "http"], "port number invalid: http"),
            (["h", "0"], "port number invalid: 0"),
            (["-l", "-p", "70000"], "port number too large: 70000"),
            // getopt takes the rest of the group as -p's value.
            (["-lpk", "7000"], "port number invalid: k"),
            // Operands.
            ([], "missing destination and port"),
            (["h"], "missing port number"),
            (["-l"], "missing port number"),
            (["h", "80", "90"], "too many arguments: 90"),
            (["h", "80", "90", "100"], "too many arguments: 90 100"),
            (["-l", "-p", "7000", "h", "8000"], "cannot use -p and a port together with -l"),
            (["-l", "-s", "127.0.0.1", "h", "8000"], "cannot use -s and an address together with -l"),
            (["-s", "localhost", "h", "80"], "source address localhost is not a numeric address (such as 127.0.0.1 or ::1)"),
            (["h", "80", "-s"], "option requires an argument -- 's'"),
            (["-k", "h", "80"], "must use -l with -k"),
            // The first problem in command-line order wins.
            (["-x", "-w"], "invalid option -- 'x'"),
            (["-w", "0", "-x"], "timeout 0 is invalid"),
            (["-h", "-x"], "invalid option -- 'x'"),
        ]
        for (arguments, expected) in cases {
            XCTAssertThrowsError(try Options.parse(arguments), "\(arguments)") { error in
                XCTAssertEqual((error as? Options.UsageError)?.message, expected, "\(arguments)")
            }
        }
    }

    /// What the flags ask of the library.
    func testSocketOptions() throws {
        let plain = try Options.parse(["h", "80"]).socketOptions
        XCTAssertNil(plain.transport)
        XCTAssertNil(plain.addressFamily)
        XCTAssertNil(plain.connectTimeout)
        XCTAssertEqual(plain.ringSize, 4 << 20, "vmcat's own default, as vmperf's")

        let set = try Options.parse(["-6", "-w", "1.5", "--transport", "shm", "--ring-size", "65536", "h", "80"]).socketOptions
        XCTAssertEqual(set.transport, .shm)
        XCTAssertEqual(set.addressFamily, .v6)
        XCTAssertEqual(set.ringSize, 65536)
        XCTAssertEqual(set.connectTimeout, .milliseconds(1500))
        XCTAssertNil(plain.sourceAddress)

        // -s and -p: the connection's source; -s's family is the one to dial, -p alone takes the destination's.
        let source = try Options.parse(["-s", "::1", "-p", "5000", "h", "80"]).socketOptions
        XCTAssertEqual(source.sourceAddress?.description, "[::1]:5000")
        XCTAssertEqual(source.addressFamily, .v6)
        let port = try Options.parse(["-p", "5000", "h", "80"]).socketOptions
        XCTAssertEqual(port.sourceAddress?.description, "0.0.0.0:5000")
        XCTAssertNil(port.addressFamily)
        XCTAssertNil(try Options.parse(["-l", "-s", "127.0.0.1", "7000"]).socketOptions.sourceAddress, "with -l, -s is where to listen")

        // The longest timeout still converts (the fuzz target's input, within the limit).
        let longest = try Options.parse(["-w", "2147483", "-q", "2147483", "h", "80"])
        XCTAssertEqual(longest.socketOptions.connectTimeout, .seconds(2_147_483))
        XCTAssertEqual(longest.quitAfterEOF, 2_147_483)
        XCTAssertEqual(set.handshakeTimeout, .milliseconds(1500))
    }

    func testHelpText() {
        XCTAssertTrue(Options.help.hasPrefix(Options.usage))
        XCTAssertTrue(Options.usage.hasPrefix("usage: vmcat [-46dhklNvz] [-p port] [-q seconds] [-s sourceaddr] [-w timeout]"))
        for flag in ["-4", "-6", "-d", "-h", "-k", "-l", "-N", "-p port", "-q secs", "-s sourceaddr", "-v", "-w timeout", "-z", "--transport", "--ring-size"] {
            XCTAssertTrue(Options.help.contains("\t\t\(flag)"), "help has no line for \(flag)")
        }
    }

    /// The executable: a bad command line is one line on stderr, `vmcat: <message> (usage: vmcat -h)`, and exit
    /// status 1; -h prints the help on stdout and exits 0.
    func testExecutableReportsOneLine() throws {
        let vmcat = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("vmcat")
        for (arguments, line) in [
            (["-x", "h", "80"], "vmcat: invalid option -- 'x' (usage: vmcat -h)\n"),
            (["h", "80", "-w"], "vmcat: option requires an argument -- 'w' (usage: vmcat -h)\n"),
            (["-k", "h", "80"], "vmcat: must use -l with -k (usage: vmcat -h)\n"),
        ] {
            let (status, stdout, stderr) = try run(vmcat, arguments)
            XCTAssertEqual(status, 1, "\(arguments)")
            XCTAssertEqual(stderr, line, "\(arguments)")
            XCTAssertEqual(stdout, "", "\(arguments)")
        }
        let (status, stdout, stderr) = try run(vmcat, ["-h"])
        XCTAssertEqual(status, 0)
        XCTAssertEqual(stdout, Options.help + "\n")
        XCTAssertEqual(stderr, "")
    }

    private func run(_ executable: URL, _ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        try process.run()
        // Small outputs: both fit in the pipes, so reading one after the other cannot block the child.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }
}
