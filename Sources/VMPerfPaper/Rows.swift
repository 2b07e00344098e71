import CVMSock
import Glibc
import VMPerfSupport
import VMSock

extension Side {
    /// Runs one row of the table on this side and returns its run figures (those of side 0 are the measurement).
    ///
    /// Side 0 puts the row's shared words in their starting state, names the row in the page, and meets the peer
    /// at the barrier (`announce`). Side 1 has passed that barrier already when it gets here: it learned the row
    /// from the page after it (see `PaperBenchmark.serve`).
    mutating func runRow(_ task: PaperTask) throws -> [Double] {
        switch task {
        case .raw:
            if me == 0 {
                vms_store_seqcst_u32(page.turn, 0)
                try announce(task)
            }
            var bench = RawPingPong()
            return try measure(&bench)
        case .sync:
            if me == 0 { try resetSemaphores(announcing: task) }
            var bench = SyncPingPong()
            return try measure(&bench)
        case .sync1k:
            if me == 0 { try resetSemaphores(announcing: task) }
            var bench = Sync1kPingPong(me: me)
            defer { bench.close() }
            return try measure(&bench)
        case .tcp:
            var bench = TCPPingPong(fd: try tcpConnection())
            defer { bench.close() }
            return try measure(&bench)
        case .vmsock:
            var bench = VMSockPingPong(socket: try vmsockConnection())
            defer { bench.close() }
            return try measure(&bench)
        case .quit:
            if me == 0 { try announce(task) }
            return []
        }
    }

    private mutating func announce(_ task: PaperTask) throws(Stop) {
        page.task = task
        try barrier()
    }

    private mutating func resetSemaphores(announcing task: PaperTask) throws(Stop) {
        page.semaphore(0).reset()
        page.semaphore(1).reset()
        page.counter.pointee = 0
        try announce(task)
    }

    /// The parent listens and announces the port; the peer connects after the barrier.
    private mutating func tcpConnection() throws -> Int32 {
        let fd: Int32
        if me == 0 {
            let (listener, port) = try LoopbackTCP.listen()
            defer { _ = close(listener) }
            page.port = port
            try announce(.tcp)
            fd = try LoopbackTCP.accept(listener, &watch)
        } else {
            fd = try LoopbackTCP.connect(port: page.port)
        }
        do {
            try LoopbackTCP.configure(fd)
        } catch {
            _ = close(fd)
            throw error
        }
        return fd
    }

    /// The same through vmsock: a listener with the `shm` policy (shared memory or nothing) and a connect with it.
    private mutating func vmsockConnection() throws -> VMSocket {
        let options = VMSocketOptions(transport: .shm)
        let socket: VMSocket
        if me == 0 {
            let listener = try VMListener(host: "127.0.0.1", port: 0, options: options)
            defer { listener.close() }
            page.port = listener.localAddress.port
            try announce(.vmsock)
            socket = try accept(listener)
        } else {
            socket = try VMSocket.connect(host: "127.0.0.1", port: page.port, options: options)
        }
        guard socket.transport == .sharedMemory else {
            socket.close()
            throw Failure("vmsock: the connection uses \(socket.transportDescription), not shared memory")
        }
        socket.isNonBlocking = false
        socket.readTimeout = .seconds(Watchdog.patience)
        return socket
    }

    /// Accepts without blocking for good: a peer that died before connecting must not hang the parent.
    private mutating func accept(_ listener: VMListener) throws -> VMSocket {
        listener.isNonBlocking = true
        let deadline = MonotonicClock.nanoseconds() + Watchdog.patience * 1_000_000_000
        while true {
            if let socket = try Self.acceptNow(listener) { return socket }
            var ready = pollfd(fd: listener.pollDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, 100)
            try watch.checkPeer()
            if MonotonicClock.nanoseconds() > deadline { throw Stop.noProgress }
        }
    }

    /// The connection waiting now, or nil (EAGAIN).
    private static func acceptNow(_ listener: VMListener) throws(VMSockError) -> VMSocket? {
        do {
            return try listener.accept()
        } catch {
            if error.code == EAGAIN { return nil }
            throw error
        }
    }
}
