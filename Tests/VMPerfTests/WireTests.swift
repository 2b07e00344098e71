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
}
