import Glibc

extension AsyncSocket {
    /// Connects to `host` and `port` as `VMSocket.connect(host:port:options:)` does (same transport choice,
    /// fallback reasons and errors), without blocking the calling thread while it waits: the TCP connect and the
    /// shared-memory handshake wait through `loop`. Name resolution (getaddrinfo) still runs on the calling task.
    ///
    /// Cancellation: throws ECANCELED promptly; the half-made connection is closed.
    /// - Throws: ECANCELED, and what the blocking connect throws.
    public static func connect(
        host: String, port: UInt16, options: VMSocketOptions = .init(), on loop: EventLoop
    ) async throws(VMSockError) -> AsyncSocket {
        let endpoints = try Resolver.resolve(host, port: port, family: options.addressFamily)
        let socket = try await AsyncConnector(loop: loop, options: options).connect(to: endpoints)
        return try AsyncSocket(socket, on: loop)
    }

    /// Connects to one address; see `connect(host:port:options:on:)`.
    public static func connect(
        to endpoint: IPEndpoint, options: VMSocketOptions = .init(), on loop: EventLoop
    ) async throws(VMSockError) -> AsyncSocket {
        let socket = try await AsyncConnector(loop: loop, options: options).connect(to: [endpoint])
        return try AsyncSocket(socket, on: loop)
    }
}

/// The steps of `Connector`, with every wait done through an event loop. Descriptors are owned by locals, so a
/// failure or a cancellation anywhere closes what was made so far.
struct AsyncConnector {
    let loop: EventLoop
    let options: VMSocketOptions

    func connect(to endpoints: [IPEndpoint]) async throws(VMSockError) -> VMSocket {
        try Connector.validate(options)
        var failure = Connector.noAddress
        for endpoint in endpoints {
            do throws(VMSockError) {
                return try await connect(to: endpoint)
            } catch {
                if error.code == ECANCELED { throw error }
                failure = error
            }
        }
        throw failure
    }

    private func connect(to destination: IPEndpoint) async throws(VMSockError) -> VMSocket {
        var fallback = FallbackReason.disabledByPolicy
        var detail: String? = nil
        if options.effectiveTransport != .tcp {
            switch await sharedMemory(to: destination) {
            case .success(let socket): return socket
            case .failure(let error):
                if error.code == ECANCELED { throw error }  // cancelled is not a reason to try TCP
                (fallback, detail) = try Connector.fallingBack(after: error, to: destination, options: options)
            }
        }
        let socket = try await tcp(to: destination)
        return Connector.tcpSocket(socket, to: destination, fallback: fallback, detail: detail)
    }

    /// Non-blocking connect (EINPROGRESS), then POLLOUT through the loop, then SO_ERROR.
    private func tcp(to destination: IPEndpoint) async throws(VMSockError) -> Descriptor {
        let (socket, inProgress) = try TCPCalls.startConnect(destination)
        guard inProgress else {
            TCPCalls.setNoDelay(socket.raw)
            return socket
        }
        let timeoutMs = options.connectTimeoutMs
        let deadline = timeoutMs < 0 ? nil : monotonicNanos() + Int64(timeoutMs) * 1_000_000
        guard try await wait(socket.raw, Int16(POLLOUT), until: deadline, "connect") else {
            throw TCPCalls.timedOut(destination, timeoutMs)
        }
        try TCPCalls.finishConnect(socket.raw, destination)
        return socket
    }

    /// The shared-memory attempt, as `Connector.sharedMemory`: every failure carries its `FallbackReason`.
    private func sharedMemory(to destination: IPEndpoint) async -> Result<VMSocket, VMSockError> {
        let candidates = Connector.registrations(for: destination, options: options)
        if candidates.isEmpty { return .failure(Connector.notLocal) }
        var failure = Connector.noListener
        let timeoutMs = options.handshakeTimeoutMs
        for address in candidates {
            let deadline = monotonicNanos() + Int64(timeoutMs) * 1_000_000
            let control: Descriptor
            do throws(VMSockError) {
                control = try await controlConnect(address, until: deadline)
            } catch {
                if error.code == ECONNREFUSED { continue }  // nobody registered under this name
                return .failure(error.code == ECANCELED ? error : Connector.controlConnectFailure(error))
            }
            do throws(VMSockError) {
                guard let peer = try Connector.trustedOwner(control, address, options, else: &failure) else { continue }
                let hello = try Handshake.sendHello(control, dialed: destination, capacity: options.ringSize)
                guard try await wait(control.raw, Int16(POLLIN), until: deadline, "connect") else {
                    throw VMSockError(code: ETIMEDOUT, "peer did not answer the handshake within \(timeoutMs) ms")
                }
                let reply = try ControlSocket.receiveReady(control.raw)
                let link = try Handshake.finishConnect(hello, reply: reply, control: control, peer: peer, address: address)
                return .success(try Connector.sharedMemorySocket(link, to: destination))
            } catch {
                return .failure(error.code == ECANCELED ? error : Connector.handshakeFailure(error))
            }
        }
        return .failure(failure)
    }

    /// Connects the control socket. A full backlog cannot be polled for (AF_UNIX), so it retries with a growing
    /// pause until `deadline`, as the blocking connect waits for room.
    private func controlConnect(_ address: ControlAddress, until deadline: Int64) async throws(VMSockError) -> Descriptor {
        var pause = Duration.milliseconds(1)
        while true {
            if let control = try ControlSocket.connectNow(address) { return control }
            if monotonicNanos() >= deadline {
                throw VMSockError(
                    code: ETIMEDOUT, "\(address) did not accept within \(options.handshakeTimeoutMs) ms (its backlog is full)")
            }
            do { try await Task.sleep(for: pause) } catch { throw cancelled("connect") }
            pause = min(pause * 2, .milliseconds(50))
        }
    }

    /// Waits until `fd` polls `events` (true), or `deadline` passes (false), through the loop.
    /// - Throws: ECANCELED when the task is cancelled.
    private func wait(_ fd: Int32, _ events: Int16, until deadline: Int64?, _ what: String) async throws(VMSockError) -> Bool {
        let waiter = try ReadinessWaiter(loop: loop, interest: PollInterest(descriptor: fd, events: events))
        while true {
            if Task.isCancelled { throw cancelled(what) }
            var pfd = [pollfd(fd: fd, events: events, revents: 0)]
            if try Sys.poll(&pfd, timeoutMs: 0) > 0 { return true }
            var timeout: Duration? = nil
            if let deadline {
                let left = deadline - monotonicNanos()
                if left <= 0 { return false }
                timeout = .nanoseconds(left)
            }
            // The waiter's event is not pending once this returns (it fired, timed out, or was deleted), so the
            // caller may close `fd` afterwards.
            await waiter.wait(timeout: timeout)
        }
    }

    private func cancelled(_ what: String) -> VMSockError {
        VMSockError(code: ECANCELED, "\(what) cancelled; the half-made connection was closed")
    }
}
