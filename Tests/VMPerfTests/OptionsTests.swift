import XCTest
import VMPerfSupport
@testable import vmperf

/// The command line: iperf3's defaults and spellings, and a clear message with exit status 1 for bad input.
final class OptionsTests: XCTestCase {
    func testDefaultsAreIperf3s() throws {
        let options = try Options.parse(["-c", "127.0.0.1"])
        XCTAssertEqual(options.port, 5201)
        XCTAssertEqual(options.blockSize, 128 << 10)
        XCTAssertEqual(options.duration, 10)
        XCTAssertEqual(options.interval, 1)
        XCTAssertEqual(options.parallel, 1)
        XCTAssertEqual(try Options.parse(["-c", "h", "--latency"]).blockSize, 64)
    }

    func testValuesAttachedOrSeparateWithSuffixes() throws {
        let options = try Options.parse(Options.splittingAttachedValues(["-c", "h", "-P4", "-l128K", "-t", "5", "-fM"]))
        XCTAssertEqual(options.parallel, 4)
        XCTAssertEqual(options.blockSize, 128 << 10)
        XCTAssertEqual(options.time, 5)
        XCTAssertEqual(try Options.parse(Options.splittingAttachedValues(["-c", "h", "-n1G"])).bytes?.value, 1 << 30)
        XCTAssertEqual(options.format.letter, "M")
        XCTAssertEqual(try Options.parse(["-s", "-1", "-V", "-J"]).oneOff, true)
    }

    /// -b takes iperf3's rates (powers of 1000) and an optional /burst; -O, -T and --timestamps as iperf3 spells
    /// them, a bare --timestamps with iperf3's format.
    func testBitrateOmitTitleAndTimestamps() throws {
        let options = try Options.parse(Options.splittingAttachedValues(["-c", "h", "-b10M", "-O2", "-Tmine", "--timestamps"]))
        XCTAssertEqual(options.bitrate?.bitsPerSecond, 10_000_000)
        XCTAssertNil(options.bitrate?.burst)
        XCTAssertEqual(options.omit, 2)
        XCTAssertEqual(options.title, "mine")
        XCTAssertEqual(options.timestamps, "%c ")
        XCTAssertEqual(Bitrate(argument: "1.5G/20"), Bitrate(argument: "1500m/20"))
        XCTAssertEqual(Bitrate(argument: "1.5G/20")?.bitsPerSecond, 1_500_000_000)
        XCTAssertEqual(Bitrate(argument: "1.5G/20")?.burst, 20)
        XCTAssertEqual(Bitrate(argument: "0")?.bitsPerSecond, 0)
        for bad in ["", "x", "-1", "1G/0", "1G/1001", "1G/", "1Q"] { XCTAssertNil(Bitrate(argument: bad), bad) }
        let formatted = try Options.parse(Options.splittingAttachedValues(["-c", "h", "--timestamps=%H:%M "]))
        XCTAssertEqual(formatted.timestamps, "%H:%M ")
        XCTAssertEqual(Options.splittingAttachedValues(["-c", "h", "--", "--timestamps"]).last, "--timestamps", "after -- a word is left alone")
    }

    /// --server-bitrate-limit as iperf3 spells it (powers of 1000, an averaging window after the slash, 5 s unless
    /// given); -d and --debug[=LEVEL] (any level prints, as in iperf3 3.12); a bare --debug or --timestamps that is
    /// another option's value left alone.
    func testServerBitrateLimitIdleTimeoutAndDebug() throws {
        let options = try Options.parse(Options.splittingAttachedValues(
            ["-s", "--server-bitrate-limit", "1.5G", "--idle-timeout", "30", "--debug"]))
        XCTAssertEqual(options.serverBitrateLimit, ServerBitrateLimit(bitsPerSecond: 1_500_000_000, seconds: 5))
        XCTAssertEqual(options.idleTimeout, 30)
        XCTAssertEqual(options.debugLevel, 4)
        XCTAssertEqual(ServerBitrateLimit(argument: "100M/2.5"), ServerBitrateLimit(bitsPerSecond: 100_000_000, seconds: 2.5))
        XCTAssertEqual(ServerBitrateLimit(argument: "0")?.bitsPerSecond, 0)
        for bad in ["", "x", "-1", "1G/0", "1G/0.05", "1G/61", "1G/", "1G/x", "1G/nan"] {
            XCTAssertNil(ServerBitrateLimit(argument: bad), bad)
        }
        let report = try Report(logfile: nil, json: false)
        XCTAssertTrue(try Options.parse(["-c", "h", "-d"]).debugLog(report).isOn)
        for level in [0, 1, 4, 5] {
            XCTAssertTrue(try Options.parse(["-c", "h", "--debug=\(level)"]).debugLog(report).isOn, "level \(level)")
        }
        XCTAssertFalse(try Options.parse(["-c", "h"]).debugLog(report).isOn)
        XCTAssertNil(Options.unsupportedIperf3Flag(["-s", "--idle-timeout", "5", "-d"]))
        let titled = try Options.parse(Options.splittingAttachedValues(["-c", "h", "-T", "--debug", "--extra-data", "--timestamps"]))
        XCTAssertEqual(titled.title, "--debug")
        XCTAssertEqual(titled.extraData, "--timestamps")
        XCTAssertNil(titled.debugLevel)
        XCTAssertNil(titled.timestamps)
        XCTAssertTrue(try Options.parse(["-sv"]).showVersion, "-v among other short flags, as getopt takes it")
        let second = try Options.parse(Options.splittingAttachedValues(["-c", "h", "-T", "-c", "--debug"]))
        XCTAssertEqual(second.title, "-c")
        XCTAssertEqual(second.debugLevel, 4, "a value that looks like an option does not make the next word a value")
    }

    /// `optionsTakingAValue` names every option --help shows with a value (but --timestamps and --debug, whose
    /// value is optional, as iperf3 takes them).
    func testOptionsTakingAValueMatchTheParser() {
        let help = Options.helpMessage(columns: 10_000)
        let shown = Set(help.split(separator: "\n").flatMap { line -> [String] in
            let words = line.split(separator: " ").map { String($0).trimmingCharacters(in: CharacterSet(charactersIn: ",")) }
            guard let value = words.firstIndex(where: { $0.hasPrefix("<") }), value > 0 else { return [] }
            return words[..<value].filter { $0.hasPrefix("-") }
        })
        XCTAssertEqual(shown.subtracting(["--timestamps", "--debug"]), Options.optionsTakingAValue.subtracting(["--paper-peer"]))
    }

    /// The server's rate check: the average over the last window; before one has passed, what moved so far over a
    /// whole window; a paced test's slack left out before the comparison.
    func testRateCheckAveragesOverItsWindow() {
        var check = RateCheck(ServerBitrateLimit(bitsPerSecond: 8000, seconds: 1), slack: 0, startNanos: 0)
        var reading = check.observe(nanos: 500_000_000, bytes: 1000)
        XCTAssertEqual(reading.average, 8000, "1,000 bytes in the first half: at least 8,000 bit/s over the window")
        XCTAssertFalse(reading.windowHasPassed)
        XCTAssertFalse(reading.isOver, "at the limit is not over it")
        reading = check.observe(nanos: 600_000_000, bytes: 1001)
        XCTAssertTrue(reading.isOver, "more than a window's worth before the window has passed")
        reading = check.observe(nanos: 1_000_000_000, bytes: 1001)
        XCTAssertTrue(reading.windowHasPassed)
        // From the newest sample at least a window old (0.5 s, 1,000 bytes): 1,000 bytes in 1 s.
        XCTAssertEqual(check.observe(nanos: 1_500_000_000, bytes: 2000).average, 8000)
        // Idle for a second: from the sample at 1.5 s, nothing moved.
        XCTAssertEqual(check.observe(nanos: 2_600_000_000, bytes: 2000).average, 0)
        var paced = RateCheck(ServerBitrateLimit(bitsPerSecond: 8000, seconds: 1), slack: 500, startNanos: 0)
        XCTAssertFalse(paced.observe(nanos: 1_000_000_000, bytes: 1500).isOver, "a burst ahead of the rate")
        XCTAssertTrue(paced.observe(nanos: 1_000_000_001, bytes: 1502).isOver)
    }

    /// The client's parameters carry -O, -b, -T and --extra-data to the server, which checks them.
    func testNewParametersReachTheServerChecked() throws {
        let options = try Options.parse(["-c", "h", "-O", "3", "-b", "2M/4", "-T", "t", "--extra-data", "x"])
        let parameters = Client(options, host: "h", try Report(logfile: nil, json: true)).parameters
        XCTAssertEqual(parameters.omit, 3)
        XCTAssertEqual(parameters.bitsPerSecond, 2_000_000)
        XCTAssertEqual(parameters.burst, 4)
        XCTAssertEqual(parameters.title, "t")
        XCTAssertEqual(parameters.extraData, "x")
        XCTAssertNoThrow(try parameters.validated())
        let changes: [(inout TestParameters) -> Void] = [
            { $0.omit = 601 }, { $0.burst = 0 }, { $0.bitsPerSecond = -1 }, { $0.title = String(repeating: "t", count: 5000) },
        ]
        for change in changes {
            var bad = parameters
            change(&bad)
            XCTAssertThrowsError(try bad.validated())
        }
        var latency = parameters
        latency.mode = .latency
        XCTAssertThrowsError(try latency.validated(), "-b does not apply to round trips")
    }

    /// An older server drops the fields it does not know: a client that asks for -O, -b or --get-server-output
    /// goes on only with a server whose answer names them.
    func testOlderServerIsRefusedForNewFlags() throws {
        let options = try Options.parse(["-c", "h", "-O", "1", "-b", "1M", "--get-server-output"])
        let parameters = Client(options, host: "h", try Report(logfile: nil, json: true)).parameters
        XCTAssertEqual(Client.unhonoured(parameters, by: ServerReply(error: nil)), "-O")
        XCTAssertEqual(Client.unhonoured(parameters, by: ServerReply(error: nil, features: ["omit"])), "-b")
        XCTAssertEqual(Client.unhonoured(parameters, by: ServerReply(error: nil, features: ["omit", "bitrate"])), "--get-server-output")
        XCTAssertNil(Client.unhonoured(parameters, by: ServerReply(error: nil, features: TestParameters.Feature.allCases.map(\.rawValue))))
        let plain = Client(try Options.parse(["-c", "h"]), host: "h", try Report(logfile: nil, json: true)).parameters
        XCTAssertNil(Client.unhonoured(plain, by: ServerReply(error: nil)), "a plain test runs against any server")
    }

    /// The server's output, the peer's text: it fits in one control message or says it did not, and it goes into
    /// the client's document as JSON only if it is a plain UTF-8 JSON object.
    func testServerOutputIsCheckedAndBounded() throws {
        let huge = String(repeating: "\t\"\n", count: 250_000)  // 750 KB of text, 1.5 MB once escaped
        XCTAssertLessThan(huge.utf8.count, ControlChannel.maximumMessage, "only its escaped form is too long")
        let bounded = ServerOutput.fitting(huge, isJSON: true)
        XCTAssertFalse(bounded.isJSON)
        XCTAssertTrue(bounded.text.contains("more than one control message"), bounded.text)
        XCTAssertEqual(ServerOutput.fitting("line\n", isJSON: false).text, "line\n")
        XCTAssertEqual(ServerOutput(text: "a\u{1b}[2Jb\tc\n", isJSON: false).printable, "a?[2Jb\tc\n")
        XCTAssertNotNil(JSON.verbatim(checking: "{\"a\": [1, true]}\n"))
        for bad in ["[1]", "\u{FEFF}{}", "{\u{0}}", "{\"a\": 1", "text"] { XCTAssertNil(JSON.verbatim(checking: bad), bad) }
        XCTAssertEqual(ServerOutput(text: "[1]", isJSON: true).documentMember.0, "server_output_text")
    }

    func testUnitsFormatLikeIperf3() {
        XCTAssertEqual(Units.transfer(3.22 * 1024 * 1024 * 1024), "3.22 GBytes")
        XCTAssertEqual(Units.rate(27.7e9 / 8, .adaptiveBits), "27.7 Gbits/sec")
        XCTAssertEqual(Units.rate(612 * 1024 * 1024, RateFormat(argument: "M")!), " 612 MBytes/sec")
        XCTAssertEqual(Units.rate(1e6 / 8, RateFormat(argument: "k")!), "1000 Kbits/sec")
    }

    /// Each bad command line: exit status 1, one line on stderr naming the problem, no crash or trace.
    func testBadInputExitsOneWithAMessage() throws {
        let cases: [([String], String)] = [
            ([], "must either be a client (-c), server (-s)"),
            (["-s", "-c", "x"], "choose one of"),
            (["-c", "x", "-P", "0"], "parallel streams 0"),
            (["-c", "x", "-l", "12Q"], "12Q"),
            (["-c", "x", "-t", "-1"], "test duration -1"),
            (["-c"], "Missing value for '-c <client>'"),
            (["-c", "x", "-p"], "Missing value for '-p <port>'"),
            (["-c", "x", "-p", "0"], "port 0"),
            (["-c", "x", "--svg", "chart.svg"], "use it with --compare"),
            (["--compare", "--svg", ""], "--svg needs a file name"),
            (["--compare", "-t", "0.1", "--svg", "/nonexistent/dir/chart.svg"], "cannot write the chart to /nonexistent/dir/chart.svg"),
            (["-c", "x", "-l", "0"], "block size 0"),
            (["-c", "x", "-n", "0"], "-n must be at least 1 byte"),
            (["-c", "x", "-k", "0"], "-k must be at least 1 block"),
            (["-c", "x", "-P", "-2"], "parallel streams -2"),
            (["-c", "x", "--spin-us", "-1"], "--spin-us -1"),
            (["-c", "x", "-A", "99"], "-A 99"),
            (["-s", "--transport", "shm"], "--transport is for clients"),
            (["-s", "-R"], "client only (-R)"),
            (["-c", "x", "-B", "localhost"], "-B localhost is not a numeric address"),
            (["-s", "--cport", "5000"], "client only (--cport)"),
            (["-c", "x", "-P", "2", "--cport", "65535"], "--cport 65535 is out of range"),
            (["-c", "x", "--bidir", "--cport", "65535"], "one port for each of the 2 connections"),
            (["-c", "x", "-4", "-6"], "cannot use -4 and -6 together"),
            (["-s", "-t", "5"], "client only (-t)"),
            (["-c", "x", "-1"], "server only (-1)"),
            (["-c", "x", "-t", "0"], "test duration 0"),
            (["-c", "x", "-t", "1", "-n", "1M"], "only one test end condition"),
            (["-c", "x", "--ring-size", "1000"], "ring size 1000"),
            (["-c", "x", "--transport", "udp"], "udp"),
            (["-c", "x", "-R", "--bidir"], "-R and --bidir"),
            (["-c", "x", "-f", "q"], "'q'"),
            (["-c", "x", "-p", "70000"], "port 70000"),
            (["-c", "x", "-i", "0.01"], "interval"),
            (["-c", "x", "--latency", "-R"], "--latency"),
            (["--paper", "--runs", "0"], "--runs 0"),
            (["-c", "x", "--bogus"], "--bogus"),
            (["-c", "x", "-b", "10X"], "'10X' is invalid for '-b <bitrate>'"),
            (["-c", "x", "-b", "1G/0"], "'1G/0'"),
            (["-c", "x", "-O", "601"], "--omit (601: 0 to 600 seconds)"),
            (["-c", "x", "--rcv-timeout", "50"], "--rcv-timeout 50 is out of range"),
            (["-c", "x", "--connect-timeout", "0"], "--connect-timeout 0 is out of range"),
            (["-c", "x", "--latency", "-b", "1M"], "-b paces a sending stream"),
            (["-s", "-b", "1M"], "client only (-b)"),
            (["-s", "-O", "1"], "client only (-O)"),
            (["-s", "-T", "x"], "client only (-T)"),
            (["-c", "x", "-D"], "server only (-D)"),
            (["--compare", "-b", "1G"], "-b is for a test between a client (-c) and a server (-s)"),
            (["--connections", "10", "-O", "1"], "-O is for a test between a client"),
            (["-c", "x", "--timestamps="], "Missing value for '--timestamps <format>'"),
            (["-c", "x", "--server-bitrate-limit", "1G"], "server only (--server-bitrate-limit)"),
            (["-c", "x", "--idle-timeout", "5"], "server only (--idle-timeout)"),
            (["-s", "--idle-timeout", "0"], "--idle-timeout 0 is out of range (1 to 86400 seconds)"),
            (["-s", "--server-bitrate-limit", "1G/0"], "'1G/0' is invalid for '--server-bitrate-limit <rate[/seconds]>'"),
            // iperf3's flags that vmperf does not take: why, and what to use instead.
            (["-c", "x", "-u"], "-u is not supported: vmperf measures byte streams"),
            (["-c", "x", "-u", "-b", "1M"], "use iperf3 -u for UDP"),
            (["-c", "x", "-Z"], "-Z is not supported: over shared memory every block is already written straight into the ring"),
            (["-c", "x", "-C", "cubic"], "-C is not supported: shared memory has no congestion control"),
            (["-c", "x", "--dscp=10"], "--dscp is not supported: it sets a field of IP packets"),
            (["-c", "x", "-F", "file"], "-F is not supported"),
            (["-c", "x", "--sctp"], "--sctp is not supported"),
        ]
        for (arguments, expected) in cases {
            let result = try VMPerf.run(arguments, timeout: 20)
            XCTAssertEqual(result.status, 1, "\(arguments)")
            XCTAssertTrue(result.stderr.hasPrefix("vmperf: error - "), "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(expected), "\(arguments): \(result.stderr)")
            XCTAssertFalse(result.stderr.contains("Fatal error") || result.stderr.contains("Stack dump"), "\(arguments)")
        }
    }

    func testHelpExitsZero() throws {
        let result = try VMPerf.run(["--help"])
        XCTAssertEqual(result.status, 0)
        XCTAssertTrue(result.stdout.contains("--transport"))
        XCTAssertFalse(result.stdout.contains("RateFormat("), "defaults read as the user types them")
        // iperf3's -v and --version: the version and the system, status 0.
        for flag in ["-v", "--version", "-sv"] {
            let version = try VMPerf.run([flag])
            XCTAssertEqual(version.status, 0, flag)
            XCTAssertTrue(version.stdout.hasPrefix("vmperf 1.0 (vmsock; iperf3-compatible JSON)\nLinux "), "\(flag): \(version.stdout)")
        }
    }

    func testNoServerIsAClearErrorAndAJSONErrorKey() throws {
        let port = String(VMPerf.freePort())
        let human = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "1"])
        XCTAssertEqual(human.status, 1)
        XCTAssertTrue(human.stderr.contains("unable to connect to server 127.0.0.1 port \(port)"), human.stderr)
        let json = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "1", "-J"])
        XCTAssertEqual(json.status, 1)
        let document = try json.json()
        XCTAssertTrue(try XCTUnwrap(document["error"] as? String).contains("unable to connect"))
        // What iperf3 writes when a test fails: the start as far as it is known, nothing measured.
        let start = try XCTUnwrap(document["start"] as? [String: Any])
        XCTAssertEqual((start["connected"] as? [Any])?.count, 0)
        XCTAssertNotNil(start["version"] as? String)
        XCTAssertNotNil(start["system_info"] as? String)
        XCTAssertEqual((document["intervals"] as? [Any])?.count, 0)
    }

    /// A server that accepts but does not answer (another program listens there, like an iperf3 server): the
    /// client gives up after 15 seconds and says what may be wrong.
    func testSilentServerIsNamedAsNotVmperf() throws {
        let (fd, port) = VMPerf.silentListener()
        defer { close(fd) }
        let started = Date()
        let result = try VMPerf.run(["-c", "127.0.0.1", "-p", String(port), "-t", "1"], timeout: 60)
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("did not come within 15 s"), result.stderr)
        XCTAssertTrue(result.stderr.contains("a vmperf server"), result.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 45, "it gives up; it does not hang")
    }
}
