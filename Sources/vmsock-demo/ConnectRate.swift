import ArgumentParser
import Foundation
import VMSock

/// Connection set-up cost, shared memory against TCP, in one run: the peer process connects `count` times in
/// each round; every connection exchanges one byte each way (so both ends have finished setting up) and is
/// closed. The listener accepts both kinds through one accept().
enum ConnectRate {
    /// The rounds, in order: shared memory with a new link per connection, shared memory reopening the link the
    /// previous connection left (`VMSocketOptions.reusesLinks`, the default), and TCP.
    static let rounds: [(policy: TransportPolicy, reuse: Bool)] = [(.shm, false), (.shm, true), (.tcp, true)]

    /// The listener's side: serve `count` connections per round, one after another.
    static func serve(_ listener: VMListener, count: Int) throws {
        var byte: [UInt8] = [0]
        for _ in 0..<(count * rounds.count) {
            let connection = try listener.accept()
            guard try connection.read(upTo: 1).count == 1 else { throw ValidationError("connector sent nothing") }
            try connection.writeAll(byte)
            connection.close()
            byte[0] &+= 1
        }
    }

    /// The connector's side: prints one line per round.
    static func connect(port: UInt16, count: Int, ringSize: Int) throws {
        for round in rounds {
            var options = VMSocketOptions(transport: round.policy)
            options.ringSize = ringSize
            options.reusesLinks = round.reuse
            let reusedBefore = TransportStatistics.current.sharedMemoryReused
            let start = DispatchTime.now().uptimeNanoseconds
            var transport = ""
            for _ in 0..<count {
                let socket = try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
                try socket.writeAll([1])
                guard try socket.read(upTo: 1).count == 1 else { throw ValidationError("listener sent nothing") }
                transport = socket.transport.description
                socket.close()
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let reused = TransportStatistics.current.sharedMemoryReused - reusedBefore
            let how = round.policy == .tcp ? "" : round.reuse ? ", \(reused) on reused links" : ", a new link each"
            print(String(format: "connections per second over %@%@: %.0f (%.1f µs each; connect, 1 byte each way, close; %d connections)",
                         transport, how, Double(count) / seconds, seconds / Double(count) * 1e6, count))
        }
        VMSocket.closeIdleLinks()
    }
}
