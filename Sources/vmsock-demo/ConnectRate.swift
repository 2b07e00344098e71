import ArgumentParser
import Foundation
import VMSock

/// Connection set-up cost, shared memory against TCP, in one run: the peer process connects `count` times with
/// each transport policy; every connection exchanges one byte each way (so both ends have finished setting up)
/// and is closed. The listener accepts both kinds through one accept().
enum ConnectRate {
    static let policies: [TransportPolicy] = [.shm, .tcp]

    /// The listener's side: serve `count` connections per policy, one after another.
    static func serve(_ listener: VMListener, count: Int) throws {
        var byte: [UInt8] = [0]
        for _ in 0..<(count * policies.count) {
            let connection = try listener.accept()
            guard try connection.read(upTo: 1).count == 1 else { throw ValidationError("connector sent nothing") }
            try connection.writeAll(byte)
            connection.close()
            byte[0] &+= 1
        }
    }

    /// The connector's side: prints one line per policy.
    static func connect(port: UInt16, count: Int, ringSize: Int) throws {
        for policy in policies {
            var options = VMSocketOptions(transport: policy)
            options.ringSize = ringSize
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
            print(String(format: "connections per second over %@: %.0f (%.1f µs each; connect, 1 byte each way, close; %d connections)",
                         transport, Double(count) / seconds, seconds / Double(count) * 1e6, count))
        }
    }
}
