import Foundation
import VMSock
import XCTest

@testable import vmperf

/// What one vmperf reads from the other, checked before it is used: inputs the fuzz targets found, replayed.
final class WireTests: XCTestCase {
    private let parameters = TestParameters(
        mode: .throughput, streams: 2, blockSize: 131072, duration: 1, bytes: 0, blocks: 0, reverse: false, bidir: false,
        interval: 0, spinUs: nil)

    private func results(_ json: String) throws -> SideResults {
        try JSONDecoder().decode(SideResults.self, from: Data(json.utf8))
    }

    /// Fuzz/vmperf-wire.swift: two streams of Int.max bytes overflowed the summary's sum and crashed the side that
    /// printed it. Counts beyond `SideResults.maximumCount`, and times that are not finite, are refused.
    func testHostileResultsAreRefused() throws {
        let cases = [
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":0,"sender":false,"bytes":9223372036854775807,"seconds":1},{"index":1,"sender":false,"bytes":9223372036854775807,"seconds":1}]}"#,
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":0,"sender":false,"bytes":-1,"seconds":1}]}"#,
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":-3,"sender":false,"bytes":1,"seconds":1}]}"#,
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":0,"sender":false,"bytes":1,"seconds":-1}]}"#,
            #"{"cpu":{"user":-1,"system":1},"streams":[]}"#,
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":0,"sender":true,"bytes":1,"seconds":1,"waits":{"readSleeps":9223372036854775807,"writeSleeps":1,"dataRings":0,"spaceRings":0}}]}"#,
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":0,"sender":true,"bytes":1,"seconds":1,"retransmits":-5}]}"#,
        ]
        for json in cases {
            XCTAssertThrowsError(try results(json).validated(), json)
        }
    }

    /// The largest results `validated` lets through still add up and print, on both sides.
    func testLargestValidResultsPrint() throws {
        let most = SideResults.maximumCount
        let remote = try results(
            #"{"cpu":{"user":1,"system":1},"streams":[{"index":0,"sender":false,"bytes":\#(most),"seconds":1,"waits":{"readSleeps":\#(most),"writeSleeps":\#(most),"dataRings":\#(most),"spaceRings":\#(most)}},{"index":1,"sender":false,"bytes":\#(most),"seconds":0}]}"#
        ).validated()
        let mine = (0..<2).map { StreamResult(index: $0, sender: true, bytes: most, seconds: 1, waits: WaitStatistics()) }
        let local = TestRun.Outcome(streams: mine, intervals: [], cpu: CPUUsage(user: 1, system: 1), histogram: nil)
        for side in [TestRun.Side.client, .server] {
            let summary = Summary(parameters: parameters, side: side, local: local, remote: remote, format: .adaptiveBits)
            XCTAssertFalse(summary.humanLines().isEmpty)
            XCTAssertEqual(summary.waitLines().count, 1)
            XCTAssertFalse(summary.endJSON().rendered().isEmpty)
        }
    }

    /// A client that asks for a reverse test and then never reads, its connections left open and its control
    /// connection silent (stuck, or hostile): the server's sending stream, blocked for room, is ended 10 s after
    /// the test's planned end with a message, over shared memory and over TCP at once.
    func testServerEndsATestWhoseClientStopsReading() throws {
        let runs = try ["shm", "tcp"].map { transport -> (VMPerf.Running, [VMSocket], String) in
            let port = VMPerf.freePort()
            let server = try VMPerf.Running(["-s", "-1", "-p", String(port)])
            VMPerf.waitForListener(port: String(port))
            var options = VMSocketOptions()
            options.transport = transport == "shm" ? .shm : .tcp
            let cookie = Greeting.newCookie()
            let control = try VMSocket.connect(host: "127.0.0.1", port: UInt16(port), options: options)
            try Greeting(kind: .control, index: 0, cookie: cookie).bytes.withUnsafeBytes { try control.writeAll($0) }
            let channel = ControlChannel(stream: control)
            try channel.send(TestParameters(mode: .throughput, streams: 1, blockSize: 128 << 10, duration: 1, bytes: 0,
                                            blocks: 0, reverse: true, bidir: false, interval: 0, spinUs: nil))
            XCTAssertNil(try channel.receive(ServerReply.self, timeout: 10, what: "the answer").error)
            let data = try VMSocket.connect(host: "127.0.0.1", port: UInt16(port), options: options)
            try Greeting(kind: .data, index: 0, cookie: cookie).bytes.withUnsafeBytes { try data.writeAll($0) }
            XCTAssertNil(try channel.receive(ServerReply.self, timeout: 10, what: "the go").error)
            return (server, [control, data], transport)
        }
        for (server, connections, transport) in runs {
            let finished = server.wait(timeout: 30)
            XCTAssertEqual(finished.status, 1, "\(transport): \(finished.stdout)")
            XCTAssertTrue(finished.stderr.contains("a stream of this side still could not write 10 s after the test's end: the client stopped reading"),
                          "\(transport): \(finished.stderr)")
            for connection in connections { connection.close() }
        }
    }
}
