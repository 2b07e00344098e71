import Foundation
import XCTest

/// Short real runs of each mode over each transport, a server and a client process, with the -J document
/// checked key by key against iperf3's structure (the keys iperf3 3.12 writes, plus test_start.bidir).
final class RunTests: XCTestCase {
    static let spanKeys = ["socket", "start", "end", "seconds", "bytes", "bits_per_second", "sender"]
    static let sumKeys = ["start", "end", "seconds", "bytes", "bits_per_second", "sender"]

    /// Checks the iperf3 key list; returns the document.
    @discardableResult
    func checkIperf3Keys(_ document: [String: Any], client: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let start = try XCTUnwrap(document["start"] as? [String: Any], file: file, line: line)
        for key in ["version", "system_info", "timestamp", "connected", "test_start", "vmsock"] {
            XCTAssertNotNil(start[key], "start.\(key)", file: file, line: line)
        }
        XCTAssertNotNil(start[client ? "connecting_to" : "accepted_connection"], file: file, line: line)
        let timestamp = try XCTUnwrap(start["timestamp"] as? [String: Any])
        XCTAssertNotNil(timestamp["time"] as? String)
        XCTAssertNotNil(timestamp["timesecs"] as? Int)
        let connected = try XCTUnwrap(start["connected"] as? [[String: Any]])
        XCTAssertFalse(connected.isEmpty)
        for key in ["socket", "local_host", "local_port", "remote_host", "remote_port"] {
            XCTAssertNotNil(connected[0][key], "connected[].\(key)", file: file, line: line)
        }
        let testStart = try XCTUnwrap(start["test_start"] as? [String: Any])
        XCTAssertEqual(testStart["protocol"] as? String, "TCP")
        for key in ["num_streams", "blksize", "omit", "duration", "bytes", "blocks", "reverse", "bidir"] {
            XCTAssertNotNil(testStart[key] as? Int, "test_start.\(key)", file: file, line: line)
        }
        let intervals = try XCTUnwrap(document["intervals"] as? [[String: Any]])
        XCTAssertFalse(intervals.isEmpty, "even a test shorter than an interval reports one", file: file, line: line)
        for interval in intervals {
            let streams = try XCTUnwrap(interval["streams"] as? [[String: Any]])
            for stream in streams {
                for key in Self.spanKeys + ["omitted"] { XCTAssertNotNil(stream[key], "intervals[].streams[].\(key)", file: file, line: line) }
                if stream["sender"] as? Bool == true {
                    XCTAssertNotNil(stream["retransmits"] as? Int, "intervals[].streams[].retransmits (sender)", file: file, line: line)
                }
            }
            let sum = try XCTUnwrap(interval["sum"] as? [String: Any])
            for key in Self.sumKeys { XCTAssertNotNil(sum[key], "intervals[].sum.\(key)", file: file, line: line) }
            XCTAssertNil(sum["snd_cwnd"], "iperf3's sums have no snd_cwnd (a stream's was copied there)", file: file, line: line)
        }
        let end = try XCTUnwrap(document["end"] as? [String: Any])
        let streams = try XCTUnwrap(end["streams"] as? [[String: Any]])
        XCTAssertFalse(streams.isEmpty)
        for stream in streams {
            for side in ["sender", "receiver"] {
                let record = try XCTUnwrap(stream[side] as? [String: Any], "end.streams[].\(side)", file: file, line: line)
                for key in Self.spanKeys { XCTAssertNotNil(record[key], "end.streams[].\(side).\(key)", file: file, line: line) }
            }
            let sender = try XCTUnwrap(stream["sender"] as? [String: Any])
            XCTAssertNotNil(sender["retransmits"] as? Int, "end.streams[].sender.retransmits", file: file, line: line)
        }
        for name in ["sum_sent", "sum_received"] {
            let sum = try XCTUnwrap(end[name] as? [String: Any], "end.\(name)", file: file, line: line)
            for key in Self.sumKeys { XCTAssertNotNil(sum[key], "end.\(name).\(key)", file: file, line: line) }
        }
        XCTAssertNotNil((end["sum_sent"] as? [String: Any])?["retransmits"] as? Int, "end.sum_sent.retransmits", file: file, line: line)
        let cpu = try XCTUnwrap(end["cpu_utilization_percent"] as? [String: Any])
        for key in ["host_total", "host_user", "host_system", "remote_total", "remote_user", "remote_system"] {
            XCTAssertNotNil(cpu[key] as? Double ?? (cpu[key] as? Int).map(Double.init), "cpu.\(key)", file: file, line: line)
        }
        XCTAssertNil(document["error"], file: file, line: line)
        return document
    }

    private func vmsock(_ document: [String: Any]) -> [String: Any] {
        (document["start"] as? [String: Any])?["vmsock"] as? [String: Any] ?? [:]
    }

    private func end(_ document: [String: Any], _ key: String) -> [String: Any] {
        (document["end"] as? [String: Any])?[key] as? [String: Any] ?? [:]
    }

    func testThroughputOverSharedMemoryAndTCP() throws {
        for (transport, expected) in [("shm", "shared memory"), ("tcp", "TCP")] {
            let (client, server) = try VMPerf.clientAgainstServer(["-t", "0.6", "-i", "0.2", "-J", "--transport", transport], serverArguments: ["-J"])
            XCTAssertEqual(client.status, 0, client.stderr)
            let document = try checkIperf3Keys(client.json())
            XCTAssertEqual(vmsock(document)["transport"] as? String, expected)
            XCTAssertGreaterThanOrEqual((document["intervals"] as? [Any])?.count ?? 0, 2)
            let sent = end(document, "sum_sent")["bytes"] as? Int ?? 0
            XCTAssertGreaterThan(sent, 0)
            XCTAssertEqual(end(document, "sum_received")["bytes"] as? Int, sent, "every byte sent arrives")
            XCTAssertEqual(server.status, 0, server.stderr)
            try checkIperf3Keys(server.json(), client: false)
            try checkWaits(document, expected: transport == "shm")
            if transport == "shm" { XCTAssertEqual(end(document, "sum_sent")["retransmits"] as? Int, 0, "nothing is sent twice") }
        }
    }

    /// The human layout over each transport: the transport named on the connection line, interval lines,
    /// the sender and receiver summary; -f picks the rate's unit, the transfer stays adaptive (as in iperf3).
    /// The sender's lines carry iperf3's Retr, and its intervals Cwnd: the ring's 4 MiB over shared memory.
    func testHumanOutputOverSharedMemoryAndTCP() throws {
        for (transport, expected) in [("shm", "via shared memory"), ("tcp", "via TCP (shared memory off by policy)")] {
            let (client, server) = try VMPerf.clientAgainstServer(["-t", "0.4", "-i", "0.2", "-f", "K", "--transport", transport])
            XCTAssertEqual(client.status, 0, client.stderr)
            let lines = client.stdout.split(separator: "\n").map(String.init)
            XCTAssertTrue(lines.contains { $0.hasPrefix("[  1] local ") && $0.hasSuffix(expected) }, client.stdout)
            XCTAssertTrue(lines.contains("[ ID] Interval           Transfer     Bitrate         Retr  Cwnd"), client.stdout)
            XCTAssertTrue(lines.contains("[ ID] Interval           Transfer     Bitrate         Retr"), client.stdout)
            let intervals = lines.filter { $0.hasPrefix("[  1]") && $0.contains(" sec ") && !$0.hasSuffix("er") }
            XCTAssertFalse(intervals.isEmpty, client.stdout)
            for line in intervals {  // "...  KBytes/sec    0   4.00 MBytes       "
                let columns = line.components(separatedBy: "/sec").last?.split(separator: " ") ?? []
                XCTAssertEqual(columns.count, 3, "Retr and Cwnd: \(line)")
                XCTAssertNotNil(columns.first.flatMap { Int($0) }, "Retr: \(line)")
                if transport == "shm" { XCTAssertEqual(columns.dropFirst().joined(separator: " "), "4.00 MBytes", line) }
            }
            let summary = lines.filter { $0.hasSuffix("sender") || $0.hasSuffix("receiver") }
            XCTAssertEqual(summary.count, 2, client.stdout)
            for line in summary {
                XCTAssertTrue(line.contains("KBytes/sec"), line)
                XCTAssertTrue(line.contains("MBytes  ") || line.contains("GBytes  "), "adaptive transfer: \(line)")
                let columns = line.components(separatedBy: "/sec").last?.split(separator: " ") ?? []
                XCTAssertEqual(columns.count, line.hasSuffix("sender") ? 2 : 1, "Retr on the sender's line only: \(line)")
            }
            XCTAssertEqual(lines.last, "vmperf Done.")
            // The server received: no Retr anywhere, as iperf3's.
            XCTAssertTrue(server.stdout.contains("[ ID] Interval           Transfer     Bitrate\n"), server.stdout)
            XCTAssertFalse(server.stdout.contains("Retr"), server.stdout)
        }
    }

    /// -O, -b, -T and --extra-data, as iperf3 takes them: the warm-up's intervals are marked omitted and come
    /// first, the figures and times start again from zero after it, and -n counts after it; -b holds the sender
    /// to its rate from its start (warm-up included); the title and the extra data reach both documents.
    /// -n after a warm-up, unpaced (gigabytes a second over shared memory): exactly -n, sent and received.
    func testByteCountAfterWarmUpIsExact() throws {
        let (client, _) = try VMPerf.clientAgainstServer(["-n", "1M", "-O", "1", "-J"])
        XCTAssertEqual(client.status, 0, client.stderr)
        let document = try client.json()
        XCTAssertEqual(end(document, "sum_sent")["bytes"] as? Int, 1 << 20)
        XCTAssertEqual(end(document, "sum_received")["bytes"] as? Int, 1 << 20)
    }

    func testOmitBitrateTitleAndExtraData() throws {
        let began = Date()
        let (client, server) = try VMPerf.clientAgainstServer(
            ["-n", "3M", "-O", "1", "-i", "0.2", "-b", "80M", "-T", "mine", "--extra-data", "more", "-J"], serverArguments: ["-J"])
        let elapsed = Date().timeIntervalSince(began)
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertEqual(server.status, 0, server.stderr)
        var warmUpBytes = 0
        for (document, isClient) in [(try client.json(), true), (try server.json(), false)] {
            try checkIperf3Keys(document, client: isClient)
            XCTAssertEqual(document["title"] as? String, "mine")
            XCTAssertEqual(document["extra_data"] as? String, "more")
            let testStart = try XCTUnwrap((document["start"] as? [String: Any])?["test_start"] as? [String: Any])
            XCTAssertEqual(testStart["omit"] as? Int, 1)
            XCTAssertEqual(testStart["target_bitrate"] as? Int, 80_000_000)
            let intervals = try XCTUnwrap(document["intervals"] as? [[String: Any]])
            let sums = intervals.compactMap { $0["sum"] as? [String: Any] }
            let omitted = sums.map { $0["omitted"] as? Bool ?? false }
            XCTAssertEqual(omitted.first, true, "the warm-up's intervals come first")
            XCTAssertEqual(omitted.last, false)
            XCTAssertEqual(omitted, omitted.sorted { $0 && !$1 }, "no warm-up interval after the test's: \(omitted)")
            let firstCounted = try XCTUnwrap(sums.first { $0["omitted"] as? Bool == false })
            XCTAssertEqual(firstCounted["start"] as? Double ?? (firstCounted["start"] as? Int).map(Double.init), 0,
                           "times start again from zero after the warm-up")
            if isClient { warmUpBytes = sums.filter { $0["omitted"] as? Bool == true }.reduce(0) { $0 + ($1["bytes"] as? Int ?? 0) } }
        }
        let document = try client.json()
        XCTAssertEqual(end(document, "sum_sent")["bytes"] as? Int, 3 << 20, "-n counts after the warm-up")
        XCTAssertEqual(end(document, "sum_received")["bytes"] as? Int, 3 << 20)
        XCTAssertGreaterThan(warmUpBytes, 0)
        // Never ahead of 80 Mbit/s since the sender started (within one block), warm-up included. Unpaced, the
        // warm-up alone would be gigabytes.
        XCTAssertLessThanOrEqual(Double(warmUpBytes + (3 << 20)), 10e6 * elapsed + 131_072, "sent faster than -b allows")
    }

    /// The human lines of the same: -T and --timestamps begin every client line (time first, as iperf3's), and
    /// the warm-up's lines on both sides end "(omitted)" where iperf3 puts it.
    func testOmittedLinesTitleAndTimestamps() throws {
        let (client, server) = try VMPerf.clientAgainstServer(["-t", "0.4", "-O", "1", "-i", "0.25", "-T", "mine", "--timestamps=<%Y> "])
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertEqual(server.status, 0, server.stderr)
        let year = Calendar(identifier: .gregorian).component(.year, from: Date())
        let lines = client.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        for line in lines { XCTAssertTrue(line.hasPrefix("<\(year)> mine:  "), line) }
        let omitted = lines.filter { $0.hasSuffix("   4.00 MBytes       (omitted)") }
        XCTAssertFalse(omitted.isEmpty, client.stdout)
        XCTAssertTrue(lines.contains { $0.hasSuffix(" sender") }, client.stdout)
        let serverOmitted = server.stdout.split(separator: "\n").filter { $0.hasSuffix("/sec                  (omitted)") }
        XCTAssertFalse(serverOmitted.isEmpty, server.stdout)
        XCTAssertFalse(server.stdout.contains("mine:"), "the title is the client's (iperf3's server prints none)")
    }

    /// Round trips of the warm-up are left out: -k counts after it, and the histogram holds only the test's.
    func testLatencyAfterWarmUp() throws {
        let (client, _) = try VMPerf.clientAgainstServer(["--latency", "-k", "300", "-O", "1", "-i", "0.5", "-J"])
        XCTAssertEqual(client.status, 0, client.stderr)
        let document = try client.json()
        XCTAssertEqual(end(document, "latency")["round_trips"] as? Int, 300)
        XCTAssertEqual(end(document, "sum_sent")["bytes"] as? Int, 300 * 64, "the summary counts the same round trips")
        XCTAssertEqual(end(document, "sum_received")["bytes"] as? Int, 300 * 64)
    }

    /// --rcv-timeout: a receiver that waits longer than it for data ends the test with a message saying so
    /// (the sender, paced to 8 bits a second, sends its first block and then nothing for hours). The sender,
    /// asleep in its pacing, sees the other side gone from the control connection and ends the test too, long
    /// before its 60 s are up (the helper kills a server still running 15 s after its client): a server whose
    /// client gave up (-R), and a client whose server gave up.
    func testReceiveTimeoutAndTheOtherSideGoneFromAPacedSender() throws {
        for transport in ["shm", "tcp", "unix"] {
            let (client, server) = try VMPerf.clientAgainstServer(
                ["-R", "-b", "8", "-t", "60", "--rcv-timeout", "1000", "--transport", transport])
            XCTAssertEqual(client.status, 1, "\(transport): \(client.stdout)")
            XCTAssertTrue(client.stderr.contains("no data arrived on stream 1 for 1 s (--rcv-timeout)"), "\(transport): \(client.stderr)")
            XCTAssertEqual(server.status, 1, "\(transport): the server ends its test itself: \(server.stdout)")
            XCTAssertTrue(server.stderr.contains("the client ended the test while this side still ran"), "\(transport): \(server.stderr)")
        }
        let (client, server) = try VMPerf.clientAgainstServer(["-b", "8", "-t", "60"], serverArguments: ["--rcv-timeout", "1000"])
        XCTAssertEqual(server.status, 1, server.stdout)
        XCTAssertTrue(server.stderr.contains("no data arrived on stream 1 for 1 s (--rcv-timeout)"), server.stderr)
        XCTAssertEqual(client.status, 1, client.stdout)
        XCTAssertTrue(client.stderr.contains("the server ended the test while this side still ran"), client.stderr)
    }

    /// --get-server-output: the client prints the server's lines after its own (as they are: no title), or with
    /// -J puts them in its document, as server_output_json when the server wrote JSON.
    func testServerOutput() throws {
        let (human, _) = try VMPerf.clientAgainstServer(["-t", "0.3", "--get-server-output", "-T", "mine"])
        XCTAssertEqual(human.status, 0, human.stderr)
        let text = try XCTUnwrap(human.stdout.components(separatedBy: "\nServer output:\n").last)
        XCTAssertTrue(text.hasPrefix("Accepted connection from 127.0.0.1"), human.stdout)
        XCTAssertTrue(text.contains("receiver\n"), human.stdout)
        XCTAssertTrue(human.stdout.hasSuffix("mine:  vmperf Done.\n"), human.stdout)
        for (serverArguments, key) in [([], "server_output_text"), (["-J"], "server_output_json")] {
            let (client, _) = try VMPerf.clientAgainstServer(["-t", "0.3", "--get-server-output", "-J"], serverArguments: serverArguments)
            XCTAssertEqual(client.status, 0, client.stderr)
            let document = try client.json()
            if key == "server_output_json" {
                try checkIperf3Keys(try XCTUnwrap(document[key] as? [String: Any]), client: false)
            } else {
                XCTAssertTrue((document[key] as? String)?.hasPrefix("Accepted connection from") == true, "\(document[key] ?? "none")")
            }
        }
    }

    /// --server-bitrate-limit: a client whose -b asks for more than the limit (2 x 200 Mbit/s against 300) is
    /// refused before its test; a test that goes over it (unpaced, against 100 Mbit/s over 1 s) is ended by the
    /// server after the window, and the client says why; a paced test well below it (20 Mbit/s) runs to its end.
    func testServerBitrateLimit() throws {
        let limit = ["--server-bitrate-limit", "300M"]
        let (refused, refusing) = try VMPerf.clientAgainstServer(["-t", "2", "-b", "200M", "-P", "2"], serverArguments: limit)
        XCTAssertEqual(refused.status, 1, refused.stdout)
        XCTAssertTrue(refused.stderr.contains("the server refused the test: total required bandwidth is larger than server limit (the client asks for 2 x 200000000 bits/sec"),
                      refused.stderr)
        XCTAssertTrue(refusing.stderr.contains("refused a client: total required bandwidth"), refusing.stderr)
        for transport in ["shm", "tcp", "unix"] {
            let (client, server) = try VMPerf.clientAgainstServer(
                ["-t", "20", "--transport", transport], serverArguments: ["--server-bitrate-limit", "100M/1"])
            XCTAssertEqual(client.status, 1, "\(transport): \(client.stdout)")
            XCTAssertTrue(client.stderr.contains("the server ended the test: total required bandwidth is larger than server limit ("),
                          "\(transport): \(client.stderr)")
            XCTAssertEqual(server.status, 1, "\(transport): \(server.stdout)")
            XCTAssertTrue(server.stderr.contains("the server's --server-bitrate-limit is 100000000)"), "\(transport): \(server.stderr)")
        }
        let (paced, _) = try VMPerf.clientAgainstServer(["-t", "2", "-b", "20M", "-R"], serverArguments: ["--server-bitrate-limit", "100M/1"])
        XCTAssertEqual(paced.status, 0, paced.stderr)
    }

    /// --idle-timeout: a one-off server that no client comes to exits (status 0), as iperf3's does; another starts
    /// over (its banner again) and still serves the client that comes later. -d says so, and with -J on the client
    /// prints the control messages on stderr, leaving the document whole.
    func testIdleTimeoutAndDebug() throws {
        let port = String(VMPerf.freePort())
        let alone = try VMPerf.run(["-s", "-1", "-p", port, "--idle-timeout", "1", "-d"], timeout: 20)
        XCTAssertEqual(alone.status, 0, alone.stderr)
        XCTAssertTrue(alone.stderr.contains("vmperf: debug - no client started a test in 1 s (--idle-timeout): exiting"), alone.stderr)
        let serving = try VMPerf.Running(["-s", "-p", port, "--idle-timeout", "1", "--debug=3"])
        VMPerf.waitForListener(port: port)
        usleep(2_500_000)
        let client = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "0.3", "-J", "-d"])
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertNoThrow(try checkIperf3Keys(try client.json()))
        XCTAssertTrue(client.stderr.contains("vmperf: debug - sent TestParameters: {"), client.stderr)
        XCTAssertTrue(client.stderr.contains("vmperf: debug - received the server's results: {"), client.stderr)
        kill(serving.process.processIdentifier, SIGTERM)
        let served = serving.wait(timeout: 10)
        XCTAssertTrue(served.stderr.contains("no client started a test in 1 s (--idle-timeout): starting over"), served.stderr)
        XCTAssertTrue(served.stdout.contains("Server listening on \(port) (test #2)"), served.stdout)
        XCTAssertTrue(served.stdout.contains("Accepted connection from 127.0.0.1"), served.stdout)
    }

    /// -D and -I: the server goes to the background at once, writes its pid, serves, refuses a second server
    /// on the same pid file while it runs, and at SIGTERM ends and removes the file.
    func testDaemonAndPidFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vmperf-daemon-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (pidFile, log) = (directory.appendingPathComponent("pid").path, directory.appendingPathComponent("log").path)
        let port = String(VMPerf.freePort())
        let started = try VMPerf.run(["-s", "-D", "-I", pidFile, "-p", port, "--logfile", log], timeout: 20)
        XCTAssertEqual(started.status, 0, started.stderr)
        let readPid = { (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        var signalled = false
        // Never a pid that may have been given to another process since; and a daemon whose pid came late still goes.
        defer { if !signalled, let pid = readPid() { kill(pid, SIGKILL) } }
        // The daemon writes the file after its starter has returned.
        var read: pid_t?
        let written = Date().addingTimeInterval(10)
        while read == nil && Date() < written {
            read = readPid()
            if read == nil { usleep(10_000) }
        }
        let pid = try XCTUnwrap(read, "no pid in \(pidFile)")
        XCTAssertEqual(kill(pid, 0), 0, "the daemon runs")
        VMPerf.waitForListener(port: port)
        let client = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "0.2"])
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertTrue(try String(contentsOfFile: log, encoding: .utf8).contains("Accepted connection from"))
        let second = try VMPerf.run(["-s", "-D", "-I", pidFile, "-p", String(VMPerf.freePort())], timeout: 20)
        XCTAssertEqual(second.status, 1)
        XCTAssertTrue(second.stderr.contains("another instance of vmperf appears to be running (pid \(pid)"), second.stderr)
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while FileManager.default.fileExists(atPath: pidFile) && Date() < deadline { usleep(20_000) }
        signalled = !FileManager.default.fileExists(atPath: pidFile)  // else it did not end: SIGKILL it
        XCTAssertTrue(signalled, "the pid file is removed at SIGTERM")
    }

    /// As iperf3, the server listens on IPv6 and IPv4 at once: a client of ::1 and one of 127.0.0.1 both reach
    /// it over shared memory, and the server names an IPv4 client as IPv4. -4 and -6 keep a client to one
    /// family; -B puts the server on one address.
    func testAddressFamilies() throws {
        let port = String(VMPerf.freePort())
        let server = try VMPerf.Running(["-s", "-p", port])
        defer { _ = server.wait(timeout: 0) }
        VMPerf.waitForListener(port: port)
        let six = try VMPerf.run(["-c", "::1", "-p", port, "-t", "0.2"])
        XCTAssertEqual(six.status, 0, six.stderr)
        XCTAssertTrue(six.stdout.contains("local ::1 port "), six.stdout)
        XCTAssertTrue(six.stdout.contains("connected to ::1 port \(port) via shared memory"), six.stdout)
        let four = try VMPerf.run(["-c", "localhost", "-4", "-p", port, "-t", "0.2"])
        XCTAssertEqual(four.status, 0, four.stderr)
        XCTAssertTrue(four.stdout.contains("connected to 127.0.0.1 port \(port) via shared memory"), four.stdout)
        let wrong = try VMPerf.run(["-c", "127.0.0.1", "-6", "-p", port, "-t", "0.2"])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("only IPv6 is allowed"), wrong.stderr)

        // A client's -B and --cport: its data streams leave from that address, from consecutive ports, and the
        // server sees them so, over shared memory and over TCP.
        for transport in ["shm", "tcp"] {
            let cport = VMPerf.freePortPair()
            let (client, server) = try VMPerf.clientAgainstServer(
                ["-B", "127.0.0.1", "--cport", String(cport), "-P", "2", "-t", "0.2", "--transport", transport])
            XCTAssertEqual(client.status, 0, client.stderr)
            for (stream, port) in [(1, cport), (2, cport + 1)] {
                XCTAssertTrue(client.stdout.contains("[  \(stream)] local 127.0.0.1 port \(port) connected"), client.stdout)
                XCTAssertTrue(server.stdout.contains("connected to 127.0.0.1 port \(port) via"), server.stdout)
            }
        }

        let boundPort = String(VMPerf.freePort())
        let bound = try VMPerf.Running(["-s", "-1", "-B", "127.0.0.1", "-p", boundPort])
        VMPerf.waitForListener(port: boundPort)
        let refused = try VMPerf.run(["-c", "::1", "-p", boundPort, "-t", "0.2"])
        XCTAssertNotEqual(refused.status, 0, "a server on 127.0.0.1 only does not answer on ::1")
        let client = try VMPerf.run(["-c", "127.0.0.1", "-p", boundPort, "-t", "0.2"])
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertEqual(bound.wait(timeout: 15).status, 0)
    }

    /// Over shared memory, `end.vmsock.streams[]` gives each side's sleeps and doorbell rings; over TCP there
    /// are none to give.
    private func checkWaits(_ document: [String: Any], expected: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let steal = try XCTUnwrap(end(document, "vmsock")["steal_percent"] as? [String: Any], "end.vmsock.steal_percent", file: file, line: line)
        XCTAssertNotNil(steal["host"] as? Double ?? (steal["host"] as? Int).map(Double.init), "the machine's steal, from /proc/stat", file: file, line: line)
        let streams = end(document, "vmsock")["streams"] as? [[String: Any]]
        guard expected else { return XCTAssertNil(streams, "no waits over TCP", file: file, line: line) }
        let stream = try XCTUnwrap(streams?.first, "end.vmsock.streams[]", file: file, line: line)
        XCTAssertEqual(stream["socket"] as? Int, 1, file: file, line: line)
        for side in ["sender_waits", "receiver_waits"] {
            let waits = try XCTUnwrap(stream[side] as? [String: Any], "end.vmsock.streams[].\(side)", file: file, line: line)
            for key in ["read_sleeps", "write_sleeps", "data_rings", "space_rings"] {
                XCTAssertNotNil(waits[key] as? Int, "\(side).\(key)", file: file, line: line)
            }
        }
    }

    /// The client's --ring-size (-w) sizes the server's rings for the test too, as iperf3's -w does the window;
    /// without it, the server's own --ring-size holds.
    func testClientRingSizeAppliesToBothSides() throws {
        let (chosen, _) = try VMPerf.clientAgainstServer(
            ["-t", "0.3", "-R", "-w", "64K", "--spin-us", "0", "-J"], serverArguments: ["--ring-size", "1M"])
        XCTAssertEqual(chosen.status, 0, chosen.stderr)
        let given = vmsock(try chosen.json())
        XCTAssertEqual(given["spin_us"] as? Int, 0, "every wait sleeps at once, and the bytes still all arrive")
        XCTAssertEqual(given["ring_size"] as? Int, 64 << 10)
        XCTAssertEqual(given["peer_ring_size"] as? Int, 64 << 10, "the server's ring follows the client's -w")
        let (defaulted, _) = try VMPerf.clientAgainstServer(["-t", "0.3", "-J"], serverArguments: ["--ring-size", "1M"])
        XCTAssertEqual(defaulted.status, 0, defaulted.stderr)
        XCTAssertEqual(vmsock(try defaulted.json())["peer_ring_size"] as? Int, 1 << 20, "else the server's own size")
    }

    func testByteAndBlockCountsAcrossParallelStreams() throws {
        for transport in ["shm", "tcp"] {
            let (bytes, _) = try VMPerf.clientAgainstServer(["-n", "10M", "-P", "3", "-J", "-l", "100K", "--transport", transport])
            XCTAssertEqual(bytes.status, 0, bytes.stderr)
            let document = try checkIperf3Keys(bytes.json())
            XCTAssertEqual(end(document, "sum_sent")["bytes"] as? Int, 10 << 20)
            XCTAssertEqual(end(document, "sum_received")["bytes"] as? Int, 10 << 20)
            XCTAssertEqual(((document["end"] as? [String: Any])?["streams"] as? [Any])?.count, 3)
            // A test this short ends within its first interval; it still reports that interval.
            let (blocks, _) = try VMPerf.clientAgainstServer(["-k", "1000", "-l", "1K", "-J", "--transport", transport])
            XCTAssertEqual(blocks.status, 0, blocks.stderr)
            let counted = try checkIperf3Keys(blocks.json())
            XCTAssertEqual(end(counted, "sum_received")["bytes"] as? Int, 1000 << 10)
        }
    }

    func testReverseAndBidirectional() throws {
        let (reverse, _) = try VMPerf.clientAgainstServer(["-R", "-t", "0.5", "-P", "2"])
        XCTAssertEqual(reverse.status, 0, reverse.stderr)
        XCTAssertTrue(reverse.stdout.contains("Reverse mode"), reverse.stdout)
        XCTAssertTrue(reverse.stdout.contains("[SUM]"), reverse.stdout)
        XCTAssertTrue(reverse.stdout.contains("receiver"))
        for transport in ["shm", "tcp"] {
            let (reversed, server) = try VMPerf.clientAgainstServer(["-R", "-t", "0.4", "-J", "--transport", transport], serverArguments: ["-J"])
            XCTAssertEqual(reversed.status, 0, reversed.stderr)
            let document = try checkIperf3Keys(reversed.json())
            XCTAssertEqual((document["start"] as? [String: Any])?["test_start"].flatMap { ($0 as? [String: Any])?["reverse"] as? Int }, 1)
            XCTAssertEqual(end(document, "sum_sent")["sender"] as? Bool, false, "iperf3: the client did not send")
            XCTAssertEqual(end(document, "sum_received")["bytes"] as? Int, end(document, "sum_sent")["bytes"] as? Int)
            try checkIperf3Keys(server.json(), client: false)
            let (bidir, bidirServer) = try VMPerf.clientAgainstServer(["--bidir", "-t", "0.5", "-J", "--transport", transport], serverArguments: ["-J"])
            XCTAssertEqual(bidir.status, 0, bidir.stderr)
            let both = try checkIperf3Keys(bidir.json())
            XCTAssertGreaterThan(end(both, "sum_received_bidir_reverse")["bytes"] as? Int ?? 0, 0)
            XCTAssertEqual(((both["end"] as? [String: Any])?["streams"] as? [Any])?.count, 2)
            try checkIperf3Keys(bidirServer.json(), client: false)
        }
    }

    /// iperf3's --bidir layout: the streams this side sends on and their [SUM], then the ones it receives on and
    /// theirs, in the intervals and in the summary.
    func testBidirectionalHumanLayout() throws {
        let (client, _) = try VMPerf.clientAgainstServer(["--bidir", "-P", "2", "-t", "1", "-i", "0.2"])
        XCTAssertEqual(client.status, 0, client.stderr)
        let tagged = client.stdout.split(separator: "\n").filter { $0.contains("][TX-C]") || $0.contains("][RX-C]") }
        // Per block (an interval, or the summary's senders and receivers): TX streams, TX sum, RX streams, RX sum.
        let order = tagged.map { line -> String in
            (line.hasPrefix("[SUM]") ? "S" : "s") + (line.contains("[TX-C]") ? "t" : "r")
        }
        let blocks = order.joined(separator: " ").components(separatedBy: "st st St sr sr Sr").count - 1
        let summary = order.joined(separator: " ").components(separatedBy: "st st st st St St sr sr sr sr Sr Sr").count - 1
        XCTAssertGreaterThanOrEqual(blocks, 2, client.stdout)
        XCTAssertEqual(summary, 1, client.stdout)
    }

    func testVerboseAndLogfile() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("vmperf-\(getpid()).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let (client, _) = try VMPerf.clientAgainstServer(["-t", "0.3", "-V", "--logfile", log])
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertEqual(client.stdout, "", "with --logfile the output goes to the file")
        let text = try String(contentsOfFile: log, encoding: .utf8)
        XCTAssertTrue(text.contains("Starting Test: protocol: TCP, 1 streams, 131072 byte blocks"), text)
        XCTAssertTrue(text.contains("CPU Utilization: local/sender"), text)
        XCTAssertTrue(text.contains("via shared memory"), text)
        XCTAssertTrue(text.contains("waits: sender slept"), text)
        let bad = try VMPerf.run(["-c", "127.0.0.1", "--logfile", "/nonexistent/dir/x.log"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("unable to open log file"), bad.stderr)
    }

    /// `vmperf ... | head -1`: the reader goes away mid-test; vmperf ends quietly, without a crash report.
    func testOutputPipeClosedEarly() throws {
        let port = String(VMPerf.freePort())
        let server = try VMPerf.Running(["-s", "-1", "-p", port])
        VMPerf.waitForListener(port: port)
        let shell = try VMPerf.ShellCommand(
            "'\(VMPerf.executable.path)' -c 127.0.0.1 -p \(port) -t 1 -i 0.1 | head -1")
        XCTAssertTrue(shell.stdout.hasPrefix("Connecting to host 127.0.0.1"), shell.stdout)
        XCTAssertFalse(shell.stderr.contains("crashed") || shell.stderr.contains("Fatal error"), shell.stderr)
        _ = server.wait(timeout: 15)
    }

    func testUnixSocketTransport() throws {
        let (client, _) = try VMPerf.clientAgainstServer(["--transport", "unix", "-t", "0.4", "-J"])
        XCTAssertEqual(client.status, 0, client.stderr)
        XCTAssertEqual(vmsock(try checkIperf3Keys(client.json()))["transport"] as? String, "Unix socket")
    }

    func testLatencyOverSharedMemoryAndTCP() throws {
        for transport in ["shm", "tcp"] {
            let (client, _) = try VMPerf.clientAgainstServer(["--latency", "-t", "0.5", "-J", "--transport", transport])
            XCTAssertEqual(client.status, 0, client.stderr)
            let document = try checkIperf3Keys(client.json())
            let latency = end(document, "latency")
            XCTAssertGreaterThan(latency["round_trips"] as? Int ?? 0, 100)
            XCTAssertEqual(latency["message_size"] as? Int, 64)
            let value = { (key: String) in (latency[key] as? Double) ?? (latency[key] as? Int).map(Double.init) ?? -1 }
            for key in ["mean", "stddev", "min", "max"] { XCTAssertGreaterThanOrEqual(value(key), 0, key) }
            let percentiles = try XCTUnwrap(latency["percentiles"] as? [String: Any])
            XCTAssertEqual(Set(percentiles.keys), ["25", "50", "75", "90", "99", "99.9", "99.99", "99.999"])
            let p50 = (percentiles["50"] as? Double) ?? Double(percentiles["50"] as? Int ?? -1)
            XCTAssertLessThanOrEqual(value("min"), p50)
            XCTAssertLessThanOrEqual(p50, value("max"))
        }
        for transport in ["shm", "tcp"] {
            let (human, _) = try VMPerf.clientAgainstServer(["--latency", "-t", "0.3", "--transport", transport])
            XCTAssertTrue(human.stdout.contains("avg-rtt="), human.stdout)
            XCTAssertTrue(human.stdout.contains("percentile 99.999 ="), human.stdout)
        }
    }

    /// With -P 2, an interval's [SUM] mean round trip is the mean over both streams' round trips: between the
    /// two streams' means. One separator before the summary. (Full intervals only: in the last, partial one a
    /// stream may have stopped early.)
    func testParallelLatencySumIsAMean() throws {
        let (client, _) = try VMPerf.clientAgainstServer(["--latency", "-P", "2", "-t", "1", "-i", "0.2"])
        XCTAssertEqual(client.status, 0, client.stderr)
        let lines = client.stdout.split(separator: "\n").map(String.init)
        let mean = { (line: String) -> Double? in
            let words = line.split(separator: " ")
            return words.count >= 2 && words.last == "usec" ? Double(words[words.count - 2]) : nil
        }
        let sums = lines.indices.filter { lines[$0].hasPrefix("[SUM]") && $0 >= 2 }
        var checked = 0
        for index in sums.dropLast() {
            let line = lines[index]
            guard let sum = mean(line), let first = mean(lines[index - 2]), let second = mean(lines[index - 1]),
                  first > 0, second > 0 else { continue }
            XCTAssertGreaterThanOrEqual(sum, min(first, second) * 0.99, "\(lines[index - 2])\n\(lines[index - 1])\n\(line)")
            XCTAssertLessThanOrEqual(sum, max(first, second) * 1.01, "\(lines[index - 2])\n\(lines[index - 1])\n\(line)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 0, client.stdout)
        XCTAssertFalse(client.stdout.contains("- - -\n- - -"), "one separator: \(client.stdout)")
    }

    func testCompareTableNamesEveryTransport() throws {
        let chart = FileManager.default.temporaryDirectory.appendingPathComponent("vmperf-\(getpid()).svg").path
        defer { try? FileManager.default.removeItem(atPath: chart) }
        let result = try VMPerf.run(["--compare", "-t", "0.2", "--svg", chart], timeout: 120)
        XCTAssertEqual(result.status, 0, result.stderr)
        // --svg draws the same table: a bar per transport and workload (4 write sizes and the round trip).
        let svg = try String(contentsOfFile: chart, encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""), svg)
        XCTAssertTrue(svg.hasSuffix("</svg>\n"))
        XCTAssertEqual(svg.components(separatedBy: "<rect class=\"bar\"").count - 1, 15)
        for name in ["shared memory", "TCP loopback", "Unix socket", "128 KiB writes", "64 B messages"] {
            XCTAssertTrue(svg.contains(name), name)
        }
        let lines = result.stdout.split(separator: "\n")
        for workload in ["64 B writes", "1 KiB writes", "64 KiB writes", "128 KiB writes"] {
            let row = try XCTUnwrap(lines.first { $0.hasPrefix(workload) }, "\(workload) in:\n\(result.stdout)")
            XCTAssertEqual(row.components(separatedBy: " GB/s (").count - 1, 3, "a figure for each transport: \(row)")
        }
        let roundTrip = try XCTUnwrap(lines.first { $0.hasPrefix("64 B round trip, mean") }, result.stdout)
        XCTAssertEqual(roundTrip.components(separatedBy: " usec (").count - 1, 3, String(roundTrip))
        for used in ["  shm: shared memory", "  tcp: TCP", "  unix: Unix socket"] {
            XCTAssertTrue(lines.contains { $0.hasPrefix(used) }, "\(used) in:\n\(result.stdout)")
        }
    }

    func testCompareRunsEveryTransportAndWorkload() throws {
        let result = try VMPerf.run(["--compare", "-t", "0.2", "-J"], timeout: 120)
        XCTAssertEqual(result.status, 0, result.stderr)
        let compare = try XCTUnwrap(try result.json()["compare"] as? [String: Any])
        let throughput = try XCTUnwrap(compare["throughput"] as? [[String: Any]])
        XCTAssertEqual(throughput.compactMap { $0["block_size"] as? Int }, [64, 1024, 65536, 131072])
        for row in throughput {
            let results = try XCTUnwrap(row["results"] as? [String: [String: Any]])
            XCTAssertEqual(Set(results.keys), ["shm", "tcp", "unix"])
            XCTAssertEqual(results["shm"]?["transport"] as? String, "shared memory")
            for figure in results.values { XCTAssertGreaterThan(figure["bytes_per_second"] as? Double ?? 0, 0) }
            XCTAssertNotNil((results["shm"]?["receiver_waits"] as? [String: Any])?["read_sleeps"] as? Int, "shared memory says how often it slept")
            XCTAssertNil(results["tcp"]?["receiver_waits"])
            XCTAssertNotNil(results["tcp"]?["steal_percent"], "each figure says how much time the hypervisor took")
        }
        let latency = try XCTUnwrap((compare["latency"] as? [String: Any])?["results"] as? [String: [String: Any]])
        XCTAssertEqual(Set(latency.keys), ["shm", "tcp", "unix"])
    }

    /// A second client during a test is told the server is busy; a client killed mid-test does not stop the
    /// server, which serves the next one.
    func testBusyServerAndKilledClient() throws {
        let port = String(VMPerf.freePort())
        let server = try VMPerf.Running(["-s", "-p", port])
        defer { kill(server.process.processIdentifier, SIGKILL) }
        VMPerf.waitForListener(port: port)
        let first = try VMPerf.Running(["-c", "127.0.0.1", "-p", port, "-t", "3"])
        usleep(1_000_000)
        let second = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "1"])
        XCTAssertEqual(second.status, 1)
        XCTAssertTrue(second.stderr.contains("busy"), second.stderr)
        kill(first.process.processIdentifier, SIGKILL)
        _ = first.wait()
        let third = try VMPerf.run(["-c", "127.0.0.1", "-p", port, "-t", "0.3"], timeout: 30)
        XCTAssertEqual(third.status, 0, third.stderr)
        XCTAssertTrue(server.process.isRunning)
    }
}
