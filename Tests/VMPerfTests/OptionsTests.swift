import XCTest
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

    func testUnitsFormatLikeIperf3() {
        XCTAssertEqual(Units.transfer(3.22 * 1024 * 1024 * 1024, .adaptiveBits), "3.22 GBytes")
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
            (["-c", "x", "-t", "-1"], "-t"),
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
    }

    func testNoServerIsAClearErrorAndAJSONErrorKey() throws {
        let port = String(VMPerf.freePort())
        let human = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "1"])
        XCTAssertEqual(human.status, 1)
        XCTAssertTrue(human.stderr.contains("unable to connect to server 127.0.0.1 port \(port)"), human.stderr)
        let json = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "1", "-J"])
        XCTAssertEqual(json.status, 1)
        XCTAssertTrue(try XCTUnwrap(json.json()["error"] as? String).contains("unable to connect"))
    }
}
