import XCTest
@testable import vmperf

final class OptionsTests: XCTestCase {
    func testDefaultsAreIperf3s() throws {
        let options = try Options.parse(["-c", "127.0.0.1"])
        XCTAssertEqual(options.port, 5201)
        XCTAssertEqual(options.blockSize, 128 << 10)
        XCTAssertEqual(options.duration, 10)
    }
}
