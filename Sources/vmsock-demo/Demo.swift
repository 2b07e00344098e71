import ArgumentParser
import Foundation
import VMSock

/// Streams data between two processes over vmsock and prints the rate, then measures a 64-byte round trip.
/// The parent listens and spawns a copy of itself as the peer, so one command runs the whole demo.
@main
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmsock-demo",
        abstract: "Stream bytes between two processes through vmsock shared memory and print the rate.")

    @Option(help: "Seconds to stream.") var seconds: Double = 3
    @Option(help: "Bytes per write.") var writeSize: Int = 64 << 10
    @Option(help: "Bytes per read on the receiving side.") var readSize: Int = 64 << 10
    @Option(help: "Ring size in bytes (power of two, 4 KiB to 64 MiB).") var ringSize: Int = 256 << 10
    @Option(help: "Round trips for the latency measurement.") var roundTrips: Int = 100_000
    @Option(help: "Microseconds a blocked call spins before it sleeps (default: VMSOCK_SPIN_US or 50).")
    var spinUs: Int?
    @Flag(help: "The reader counts bytes where they lie in shared memory instead of copying them out.")
    var inPlace = false
    @Option(help: "Instead of streaming: make this many connections with each transport and print connections per second.")
    var connections: Int?
    @Option(help: .hidden) var peerOf: String?

    func validate() throws {
        guard seconds > 0, seconds <= 3600 else { throw ValidationError("--seconds must be in (0, 3600]") }
        guard writeSize > 0, writeSize <= 64 << 20 else { throw ValidationError("--write-size must be 1 B to 64 MiB") }
        guard readSize > 0, readSize <= 64 << 20 else { throw ValidationError("--read-size must be 1 B to 64 MiB") }
        guard roundTrips > 0 else { throw ValidationError("--round-trips must be positive") }
        if let spinUs, spinUs < 0 || spinUs > 1_000_000 { throw ValidationError("--spin-us must be 0 to 1000000") }
        if let connections, connections <= 0 || connections > 1_000_000 { throw ValidationError("--connections must be 1 to 1000000") }
    }

    func run() throws {
        do {
            if let peerOf {
                guard let port = UInt16(peerOf) else { throw ValidationError("--peer-of takes a port") }
                if let connections { return try ConnectRate.connect(port: port, count: connections, ringSize: ringSize) }
                try DemoPeer.run(port: port, ringSize: ringSize, readSize: readSize, spinUs: spinUs, inPlace: inPlace)
            } else {
                try runParent()
            }
        } catch let error as VMSockError {
            FileHandle.standardError.write(Data("vmsock-demo: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    private func runParent() throws {
        var options = VMSocketOptions(transport: connections == nil ? .shm : .auto)
        options.ringSize = ringSize
        let listener = try VMListener(host: "127.0.0.1", port: 0, options: options)
        let name = String(listener.localAddress.port)
        if let connections {
            let peer = try spawnPeer(["--peer-of", name, "--ring-size", String(ringSize), "--connections", String(connections)])
            defer { if peer.isRunning { peer.terminate() }; peer.waitUntilExit() }
            try ConnectRate.serve(listener, count: connections)
            peer.waitUntilExit()  // it prints the figures after its last connection
            return
        }
        let peer = try spawnPeer(["--peer-of", name, "--ring-size", String(ringSize), "--read-size", String(readSize)]
            + (spinUs.map { ["--spin-us", String($0)] } ?? []) + (inPlace ? ["--in-place"] : []))
        defer { if peer.isRunning { peer.terminate() }; peer.waitUntilExit() }

        let stream = try listener.accept()
        if let spinUs { stream.spinMicroseconds = spinUs }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: writeSize, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
        let start = Date()
        var sent = 0
        while Date().timeIntervalSince(start) < seconds {
            for _ in 0..<64 {
                try stream.writeAll(UnsafeRawBufferPointer(buffer))
                sent += writeSize
            }
        }
        try stream.shutdown(.write)
        let receipt = try stream.read(upTo: 8)
        let elapsed = Date().timeIntervalSince(start)
        let received = receipt.count == 8 ? receipt.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) } : -1
        guard received == sent else { throw ValidationError("peer counted \(received) bytes, we sent \(sent)") }
        let rate = Double(sent) / elapsed
        print(String(format: "streamed %.2f GiB in %.2f s, %d-byte writes, %d KiB ring, reader %@: %.2f GB/s",
                     Double(sent) / Double(1 << 30), elapsed, writeSize, ringSize >> 10,
                     inPlace ? "in place" : "copying", rate / 1e9))
        stream.close()

        let pingPong = try listener.accept()
        if let spinUs { pingPong.spinMicroseconds = spinUs }
        var message = [UInt8](repeating: 7, count: 64)
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<roundTrips {
            try pingPong.writeAll(message)
            var got = 0
            while got < 64 {
                let n = try message.withUnsafeMutableBytes { try pingPong.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[got...])) }
                guard n > 0 else { throw ValidationError("peer ended the ping-pong early") }
                got += n
            }
        }
        let perTrip = Double(DispatchTime.now().uptimeNanoseconds - t0) / Double(roundTrips) / 1000
        print(String(format: "64-byte round trip: %.2f µs (mean of %d, spin %d µs)", perTrip, roundTrips, pingPong.spinMicroseconds))
        pingPong.close()
    }
}

/// This program again, as the peer process.
private func spawnPeer(_ arguments: [String]) throws -> Process {
    let peer = Process()
    peer.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    peer.arguments = arguments
    try peer.run()
    return peer
}

enum DemoPeer {
    static func run(port: UInt16, ringSize: Int, readSize: Int, spinUs: Int?, inPlace: Bool) throws {
        var options = VMSocketOptions(transport: .shm)
        options.ringSize = ringSize
        let stream = try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
        if let spinUs { stream.spinMicroseconds = spinUs }
        let sink = UnsafeMutableRawBufferPointer.allocate(byteCount: readSize, alignment: 64)
        defer { sink.deallocate() }
        var total = 0
        while true {
            let n = inPlace ? try stream.readInPlace { $0.count } : try stream.read(into: sink)
            if n == 0 { break }
            total += n
        }
        try stream.writeAll(withUnsafeBytes(of: UInt64(total).littleEndian) { Array($0) })
        stream.close()

        let echo = try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
        if let spinUs { echo.spinMicroseconds = spinUs }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try echo.read(into: $0) }
            if n == 0 { break }
            try buffer.withUnsafeBytes { try echo.writeAll(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
    }
}
