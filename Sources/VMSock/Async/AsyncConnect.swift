import Glibc

extension AsyncSocket {
    /// Connects to `host` and `port` as `VMSocket.connect(host:port:options:)` does (the same steps: transport
    /// choice, link reuse, fallback reasons and errors), without blocking the calling thread while it waits: every
    /// wait goes through `loop`. Name resolution (getaddrinfo) still runs on the calling task.
    ///
    /// Cancellation: throws ECANCELED promptly; the half-made connection is closed.
    /// - Throws: ECANCELED, and what the blocking connect throws.
    public static func connect(
        host: String, port: UInt16, options: VMSocketOptions = .init(), on loop: EventLoop
    ) async throws(VMSockError) -> AsyncSocket {
        let endpoints = try Resolver.resolve(host, port: port, family: options.addressFamily)
        return try await connect(to: endpoints, options: options, on: loop)
    }

    /// Connects to one address; see `connect(host:port:options:on:)`.
    public static func connect(
        to endpoint: IPEndpoint, options: VMSocketOptions = .init(), on loop: EventLoop
    ) async throws(VMSockError) -> AsyncSocket {
        try await connect(to: [endpoint], options: options, on: loop)
    }

    /// The async driver of `Connector`: its steps, with each wait done through the loop.
    private static func connect(
        to endpoints: [IPEndpoint], options: VMSocketOptions, on loop: EventLoop
    ) async throws(VMSockError) -> AsyncSocket {
        var connector = try Connector(to: endpoints, options: options)
        while true {
            if Task.isCancelled { throw cancelled() }
            switch try connector.advance() {
            case .connected(let connection):
                return try AsyncSocket(VMSocket(connection), on: loop)
            case .wait(let interest, let deadline, _):  // no spinning on a loop's task
                // The waiter's event is not pending once this returns (it fired, timed out, or was deleted), so
                // the connector may close the descriptor afterwards.
                let waiter = try ReadinessWaiter(loop: loop, interest: interest)
                if try !Sys.isReady(interest.descriptor, interest.events) {
                    await waiter.wait(timeout: deadline.remaining)
                }
            case .pause(let duration):
                do { try await Task.sleep(for: duration) } catch { throw cancelled() }
            }
        }
    }

    private static func cancelled() -> VMSockError {
        VMSockError(code: ECANCELED, "connect cancelled; the half-made connection was closed")
    }
}
