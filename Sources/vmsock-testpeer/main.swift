// The other process in vmsock's cross-process tests. Each mode is one role; see `usage`.
// Prints "ready" on stdout when the test may act, and reports failures on stderr with a non-zero exit.
import CVMSock
import Foundation
@_spi(Testing) import VMSock

let usage = """
    vmsock-testpeer MODE ARGS...
      stream-listen PORT BYTES RING SEED     accept one, send and check BYTES each way at once
      stream-connect PORT BYTES RING SEED    connect, send and check BYTES each way at once
      hold-listen PORT                       accept one connection and sit on it (a victim for kill -9)
      hold-connect PORT                      connect and sit on it
      park-one PORT                          accept one, read it to its end, close it; once its link is parked,
                                             print "parked" and accept nothing more (a victim for kill -9)
      hostile-connect PORT HOW               connect, then break the ring rules (HOW: see Hostile.swift)
      bad-welcome PORT HOW                   register for PORT and answer the first hello wrongly
      squat PORT                             register for PORT (as another user would) and sit on it
      cat HOST PORT                          connect; stdin to the socket, the socket to stdout (see Cat.swift)
      cat-listen HOST PORT [--echo]          accept one; the same, or echo what arrives
      async-write PORT SECONDS               async connect, write 1 KiB at a time for SECONDS (for strace -c)
      reconnect PORT COUNT                   COUNT times: connect, send 4 KiB, check the echo, close; then
                                             print how many connections reused a link
      soak-server PORT                       echo every connection, each on a thread (Soak.swift)
      soak-client PORT SECONDS               connection after connection, checked; one line of totals
      ivshmem-echo SOCKET-PATH               join vmsockd; report joins and leaves; answer rings (IvshmemEcho.swift)
      ivshmem-scribble SOCKET-PATH SECONDS   join vmsockd; write random bytes over its region (IvshmemHostile.swift)
      ivshmem-claim-all SOCKET-PATH          join vmsockd; claim every connection slot and listen entry; sit
    All ports are on 127.0.0.1, except for cat. The transport policy comes from VMSOCK_TRANSPORT.
    """

let args = CommandLine.arguments
guard args.count >= 3 else {
    FileHandle.standardError.write(Data((usage + "\n").utf8))
    exit(2)
}

@Sendable func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("vmsock-testpeer: \(message)\n".utf8))
    exit(1)
}

func ready(_ word: String = "ready") {
    FileHandle.standardOutput.write(Data((word + "\n").utf8))
}

let loopback = "127.0.0.1"
if args[1] == "ivshmem-echo" {
    do { try IvshmemEcho.run(path: args[2]) } catch { fail("\(error)") }
    exit(0)
}
if args[1] == "ivshmem-scribble" || args[1] == "ivshmem-claim-all" {
    do {
        if args[1] == "ivshmem-claim-all" { try IvshmemHostile.claimAll(path: args[2]) }
        guard args.count == 4, let seconds = Double(args[3]) else { fail("bad arguments\n\(usage)") }
        try IvshmemHostile.scribble(path: args[2], seconds: seconds)
    } catch {
        fail("\(error)")
    }
    exit(0)
}
guard let port = UInt16(args[args[1].hasPrefix("cat") ? 3 : 2]) else { fail("bad port\n\(usage)") }
do {
    switch args[1] {
    case "stream-listen", "stream-connect":
        guard args.count == 6, let bytes = Int(args[3]), let ring = Int(args[4]), let seed = UInt64(args[5]) else {
            fail("bad arguments\n\(usage)")
        }
        let options = VMSocketOptions(ringSize: ring)
        let socket: VMSocket
        if args[1] == "stream-listen" {
            let listener = try VMListener(host: loopback, port: port, options: options)
            ready()
            socket = try listener.accept()
            ready("accepted")
        } else {
            socket = try VMSocket.connect(host: loopback, port: port, options: options)
            ready("connected")
        }
        let isListener = args[1] == "stream-listen"
        try PatternPump.run(socket, bytes: bytes, sendSeed: isListener ? seed : seed + 1, receiveSeed: isListener ? seed + 1 : seed)
        ready("transport: \(socket.transportDescription)")
        ready("ok")
    case "hold-listen":
        let listener = try VMListener(host: loopback, port: port)
        ready()
        let socket = try listener.accept()
        ready("accepted")
        withExtendedLifetime(socket) { while true { pause() } }
    case "hold-connect":
        let socket = try VMSocket.connect(host: loopback, port: port)
        ready()
        withExtendedLifetime(socket) { while true { pause() } }
    case "park-one":
        let listener = try VMListener(host: loopback, port: port, options: VMSocketOptions(ringSize: 4096))
        ready()
        do {  // the socket goes at the end of the block: its link is parked then
            let socket = try listener.accept()
            while try !socket.read(upTo: 4096).isEmpty {}
            socket.close()
        }
        while listener.parkedLinkCount == 0 { usleep(1000) }
        ready("parked")
        withExtendedLifetime(listener) { while true { pause() } }
    case "soak-server":
        try Soak.serve(port: port)
    case "soak-client":
        guard args.count == 4, let seconds = Double(args[3]) else { fail("bad arguments\n\(usage)") }
        Soak.client(port: port, seconds: seconds)
    case "hostile-connect":
        guard args.count == 4 else { fail("bad arguments\n\(usage)") }
        try Hostile.connectAndMisbehave(port: port, how: args[3])
    case "bad-welcome":
        guard args.count == 4 else { fail("bad arguments\n\(usage)") }
        try Hostile.answerWrongly(port: port, how: args[3])
    case "squat":
        let registration = try RawControl.listen(IPEndpoint(numericHost: loopback, port: port)!)
        ready()
        withExtendedLifetime(registration) { while true { pause() } }
    case "cat", "cat-listen":
        guard args.count >= 4 else { fail("bad arguments\n\(usage)") }
        try Cat.run(listen: args[1] == "cat-listen", host: args[2], port: port, echo: args.contains("--echo"))
    case "reconnect":
        guard args.count == 4, let count = Int(args[3]) else { fail("bad arguments\n\(usage)") }
        let before = TransportStatistics.current.sharedMemoryReused
        for index in 0..<count {
            let socket = try VMSocket.connect(host: loopback, port: port, options: VMSocketOptions(transport: .shm))
            let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &+ index &* 31) }
            try socket.writeAll(bytes)
            var echoed: [UInt8] = []
            while echoed.count < bytes.count {
                let chunk = try socket.read(upTo: bytes.count - echoed.count)
                if chunk.isEmpty { fail("connection \(index): the echo ended after \(echoed.count) bytes") }
                echoed += chunk
            }
            if echoed != bytes { fail("connection \(index): the echo differs") }
            socket.close()
        }
        ready("reused \(TransportStatistics.current.sharedMemoryReused - before)")
    case "async-write":
        guard args.count == 4, let seconds = Double(args[3]) else { fail("bad arguments\n\(usage)") }
        try AsyncWrite.run(port: port, seconds: seconds)
    default:
        fail("unknown mode \(args[1])\n\(usage)")
    }
} catch {
    fail("\(error)")
}
