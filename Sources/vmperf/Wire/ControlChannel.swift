import Foundation
import VMPerfSupport
import VMSock

/// Control messages: a 4-byte big-endian length and a JSON body (Codable), at most 1 MiB. The peer is
/// untrusted: a bad length, bad JSON or a missing field ends the test with a message, never a crash.
struct ControlChannel {
    static let maximumMessage = 1 << 20
    let stream: any ByteStream
    /// -d: every message each way, as it went.
    let debug: DebugLog
    /// Who is at the other end, for messages: "the server", "the client".
    let peer: String

    init(stream: any ByteStream, debug: DebugLog = .off, peer: String = "the other side") {
        self.stream = stream
        self.debug = debug
        self.peer = peer
    }

    func send<T: Encodable>(_ message: T) throws {
        let body = try JSONEncoder().encode(message)
        if debug.isOn { debug("sent \(T.self): " + String(decoding: body, as: UTF8.self)) }
        var frame = withUnsafeBytes(of: UInt32(body.count).bigEndian) { Array($0) }
        frame += body
        try frame.withUnsafeBytes { try stream.writeAll($0) }
    }

    /// Waits up to `timeout` seconds for the next message.
    func receive<T: Decodable>(_ type: T.Type, timeout: Double?, what: String) throws -> T {
        stream.setReadTimeout(timeout)
        var length = [UInt8](repeating: 0, count: 4)
        guard try read(&length, what: what, timeout: timeout) else {
            throw Failure("the other side closed the control connection while we waited for \(what)")
        }
        let count = Int(length.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        guard count <= Self.maximumMessage else {
            throw Failure("the other side sent a \(count)-byte control message (the limit is \(Self.maximumMessage)); is it a vmperf of this version?")
        }
        var body = [UInt8](repeating: 0, count: count)
        guard try read(&body, what: what, timeout: timeout) else {
            throw Failure("the other side closed the control connection in the middle of \(what)")
        }
        if debug.isOn { debug("received \(what): " + Self.oneLine(String(decoding: body, as: UTF8.self))) }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body))
        } catch {
            // A side that ended the test (a server over its --server-bitrate-limit) says why in its place.
            if T.self != ServerReply.self, let reply = try? JSONDecoder().decode(ServerReply.self, from: Data(body)),
                let reason = reply.error
            {
                throw Failure("\(peer) ended the test: \(Self.oneLine(reason))")
            }
            // The decoder's words may quote the peer's (a bad enum value).
            throw Failure("\(peer) sent a malformed \(what) (\(Self.oneLine(String(describing: error))))")
        }
    }

    /// The other side's text for a terminal: control characters but newline and tab (escape sequences that would
    /// drive the terminal) shown as "?".
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
            scalar == "\n" || scalar == "\t" || !isControl(scalar) ? scalar : "?"
        }))
    }

    /// The other side's text within one line of ours (a reason, a refusal): every control character shown as "?",
    /// so that it cannot drive the terminal or pass for a line of its own.
    static func oneLine(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { isControl($0) ? "?" : $0 }))
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value)
    }

    /// Fills `bytes`; false at end of stream. A timeout says what did not come.
    private func read(_ bytes: inout [UInt8], what: String, timeout: Double?) throws -> Bool {
        do {
            return try bytes.withUnsafeMutableBytes { try stream.readExactly($0) }
        } catch where isReadTimeout(error) {
            throw Failure("\(what) did not come within \(Compare.format(timeout ?? 0)) s")
        }
    }
}

/// What the client asks for. The server checks every field (`validated`) before it acts on any.
struct TestParameters: Codable, Equatable {
    enum Mode: String, Codable { case throughput, latency }

    var mode: Mode
    var streams: Int
    var blockSize: Int
    var duration: Double
    var bytes: Int
    var blocks: Int
    var reverse: Bool
    var bidir: Bool
    var interval: Double
    var spinUs: Int?
    /// The CPU the server runs its streams on (-A n,m), if any.
    var serverCPU: Int? = nil
    /// The client's --ring-size, if given: the server's rings for this test's connections are made this size too
    /// (as iperf3's -w sets the window on both sides).
    var ringSize: Int? = nil
    /// -O: seconds run first and left out of the figures (nil from an older client: none).
    var omit: Int? = nil
    /// -b: each sending stream's target rate in bits per second, and its burst (blocks between looks at the clock).
    var bitsPerSecond: Int? = nil
    var burst: Int? = nil
    /// -T and --extra-data, for the server's JSON document.
    var title: String? = nil
    var extraData: String? = nil
    /// --get-server-output: the server sends what it printed for the test (`ServerOutput`) after its results.
    var getServerOutput: Bool? = nil

    /// Seconds of warm-up (-O).
    var omitSeconds: Int { omit ?? 0 }

    /// Optional parameters a server older than them would drop without a word.
    enum Feature: String, CaseIterable { case omit, bitrate, serverOutput }

    /// The features these parameters ask for, by the flags that ask.
    var requestedFeatures: [(feature: Feature, flag: String)] {
        let asked: [(Feature, String, Bool)] = [
            (.omit, "-O", omitSeconds > 0), (.bitrate, "-b", (bitsPerSecond ?? 0) > 0),
            (.serverOutput, "--get-server-output", getServerOutput == true),
        ]
        return asked.filter { $0.2 }.map { ($0.0, $0.1) }
    }

    /// Connections this test opens: one per stream, two per stream with --bidir.
    var connections: Int { bidir ? streams * 2 : streams }

    /// Whether the client (or the server) sends on connection `index`.
    func clientSends(_ index: Int) -> Bool {
        if mode == .latency { return true }
        if bidir { return index < streams }
        return !reverse
    }

    /// The same limits as the command line's; the server refuses anything else.
    func validated() throws -> TestParameters {
        guard (1...128).contains(streams) else { throw Failure("bad stream count \(streams)") }
        guard (1...(128 << 20)).contains(blockSize) else { throw Failure("bad block size \(blockSize)") }
        guard duration.isFinite, duration > 0, duration <= 86_400 else { throw Failure("bad duration \(duration)") }
        guard bytes >= 0, blocks >= 0 else { throw Failure("bad byte or block count") }
        guard interval == 0 || (interval.isFinite && interval >= 0.1 && interval <= 60) else { throw Failure("bad interval \(interval)") }
        guard !(reverse && bidir), !(mode == .latency && (reverse || bidir)) else { throw Failure("bad combination of -R, --bidir and --latency") }
        if let spinUs, !(0...1_000_000).contains(spinUs) { throw Failure("bad spin budget \(spinUs)") }
        if let serverCPU, !(0..<1024).contains(serverCPU) { throw Failure("bad CPU \(serverCPU)") }
        if let ringSize, !Options.validRing(ringSize) { throw Failure("bad ring size \(ringSize)") }
        if let omit, !(0...600).contains(omit) { throw Failure("bad omit \(omit)") }
        if let bitsPerSecond, !(0..<(1 << 62)).contains(bitsPerSecond) || (bitsPerSecond > 0 && mode == .latency) {
            throw Failure("bad bitrate \(bitsPerSecond)")
        }
        if let burst, !(1...1000).contains(burst) { throw Failure("bad burst \(burst)") }
        guard (title?.utf8.count ?? 0) <= 4096, (extraData?.utf8.count ?? 0) <= 4096 else { throw Failure("title or extra data over 4096 bytes") }
        return self
    }
}

/// The server's answer to the parameters, and later its go.
struct ServerReply: Codable {
    var error: String?
    /// What of the optional parameters the server honours (`TestParameters.Feature`); nil from an older server,
    /// which drops the fields it does not know, so that a client that asks for them must refuse to go on.
    var features: [String]? = nil
}

/// --get-server-output: what the server printed for the test, its lines or (-J on the server) its document.
struct ServerOutput: Codable {
    var text: String
    var isJSON: Bool

    init(text: String, isJSON: Bool) {
        self.text = text
        self.isJSON = isJSON
    }

    /// `text` if it fits in a control message once encoded (JSON escapes make it longer: tabs, newlines,
    /// quotes), else a line that says it did not: a long test with short intervals prints more than 1 MiB.
    static func fitting(_ text: String, isJSON: Bool) -> ServerOutput {
        let output = ServerOutput(text: text, isJSON: isJSON)
        let size = (try? JSONEncoder().encode(output).count) ?? Int.max
        guard size > ControlChannel.maximumMessage else { return output }
        return ServerOutput(text: "(the server printed \(text.utf8.count) bytes or more for this test, more than one control message of \(ControlChannel.maximumMessage) carries)\n", isJSON: false)
    }

    /// The text for a terminal (the peer's: `ControlChannel.printable`).
    var printable: String { ControlChannel.printable(text) }

    /// The client's -J key, as iperf3's: the server's document when it wrote one (checked to parse, as it is the
    /// peer's), else its lines.
    var documentMember: (String, JSON) {
        let json = isJSON ? JSON.verbatim(checking: text) : nil
        return json.map { ("server_output_json", $0) } ?? ("server_output_text", .string(text))
    }
}

/// What one side measured, sent to the other at the end so that both can print sender and receiver lines.
struct SideResults: Codable {
    var cpu: CPUUsage
    var streams: [StreamResult]

    /// The most a count from the other side may be: 16 Pi, so that adding up every stream's (at most 256, with
    /// our own) cannot overflow.
    static let maximumCount = 1 << 54

    /// The other side's figures, checked before they are added up and printed: counts from 0 to `maximumCount`,
    /// times and percentages finite and not negative, at most 256 streams. A count near Int.max overflowed the
    /// summary's sums and crashed the side that printed them (found by Fuzz/vmperf-wire.swift).
    func validated() throws -> SideResults {
        let counts = (0...Self.maximumCount)
        guard streams.count <= 256 else { throw Failure("results for \(streams.count) streams") }
        for stream in streams {
            let waits = stream.waits.map { [$0.readSleeps, $0.writeSleeps, $0.dataRings, $0.spaceRings] } ?? []
            guard (0..<256).contains(stream.index), counts.contains(stream.bytes), stream.seconds.isFinite, stream.seconds >= 0,
                (waits + [stream.retransmits ?? 0, stream.warmUpBytes ?? 0]).allSatisfy(counts.contains)
            else { throw Failure("bad results for stream \(stream.index)") }
        }
        guard [cpu.user, cpu.system, cpu.steal ?? 0].allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw Failure("bad processor use \(cpu.user), \(cpu.system)")
        }
        return self
    }
}

struct StreamResult: Codable {
    var index: Int
    var sender: Bool
    var bytes: Int
    var seconds: Double
    /// Sleeps and doorbell rings, for shared memory (absent from an older vmperf: optional).
    var waits: WaitStatistics? = nil
    /// Segments the sender sent again (TCP; 0 over shared memory and Unix sockets); nil from a receiver.
    var retransmits: Int? = nil
    /// -O: of a sending stream's bytes, those sent in the warm-up (already taken off `bytes`): the receiving
    /// side's count includes them, and the summary takes them off it.
    var warmUpBytes: Int? = nil
    /// When the pump ended (this side's MonotonicClock): not sent to the other side.
    var endNanos: Int64 = 0

    private enum CodingKeys: String, CodingKey { case index, sender, bytes, seconds, waits, retransmits, warmUpBytes }
}
