// nio-echo server PORT [THREADS]
// nio-echo client PORT BYTES [CONNECTIONS] [TIMEOUT_S]
//
// The server echoes every byte on 127.0.0.1:PORT and, when a client half-closes, closes after the echo. Each
// client connection sends BYTES of deterministic data in writes of varying size (following NIO's writability,
// so nothing piles up), half-closes, and checks that exactly the same bytes come back before the server's end
// of stream. Everything runs on NIOPosix's MultiThreadedEventLoopGroup: epoll, an eventfd to wake a loop, a
// timerfd for the scheduled timeout. Prints one "ok" line and exits 0, or says what went wrong and exits 1.
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

func die(_ message: String) -> Never {
    fputs("nio-echo: \(message)\n", stderr)
    exit(1)
}

// Byte i of connection c's stream is pattern[(i + 977 * c) % period]; the pattern is stored twice over, so any
// run of at most `period` bytes is one contiguous slice. The period is prime so it lines up with no buffer size.
let period = 65_521
let pattern: [UInt8] = {
    var x: UInt32 = 2_463_534_242  // xorshift32
    let once = (0..<period).map { _ in
        x ^= x << 13; x ^= x >> 17; x ^= x << 5
        return UInt8(truncatingIfNeeded: x >> 7)
    }
    return once + once
}()

/// Calls body(patternSlice, count) for the pattern bytes of stream offsets offset..<offset+count.
func forEachRun(from offset: Int, count: Int, seed: Int, _ body: (UnsafeRawBufferPointer, Int) -> Bool) -> Bool {
    var done = 0
    return pattern.withUnsafeBytes { all in
        while done < count {
            let start = (offset + done + 977 * seed) % period
            let n = min(count - done, period)
            if !body(UnsafeRawBufferPointer(rebasing: all[start..<(start + n)]), done) { return false }
            done += n
        }
        return true
    }
}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client half-closed: everything it sent has been read; close once the echo of it is written.
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fputs("nio-echo server: \(error)\n", stderr)
        context.close(promise: nil)
    }
}

final class SendAndCheck: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let total: Int
    let seed: Int
    let done: EventLoopPromise<Void>
    let timeout: TimeAmount
    var sent = 0
    var received = 0
    var writes = 0
    var finished = false
    var timer: Scheduled<Void>?

    init(total: Int, seed: Int, timeout: TimeAmount, done: EventLoopPromise<Void>) {
        self.total = total
        self.seed = seed
        self.timeout = timeout
        self.done = done
    }

    func finish(_ context: ChannelHandlerContext, _ error: String?) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        if let error {
            done.fail(EchoError(message: "connection \(seed): \(error) (sent \(sent), received \(received))"))
            context.close(promise: nil)
        } else {
            done.succeed(())
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        // A timer on the loop: NIOPosix arms its timerfd for it.
        timer = context.eventLoop.scheduleTask(in: timeout) { [self] in
            finish(context, "timed out")
        }
        pump(context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context) }
    }

    // Writes while the channel is writable, in sizes from 1 byte to 64 KiB; after the last one, half-closes.
    func pump(_ context: ChannelHandlerContext) {
        while context.channel.isWritable && sent < total {
            writes += 1
            let n = min(total - sent, 1 + (writes * 7_919) % 65_536)
            var buffer = context.channel.allocator.buffer(capacity: n)
            _ = forEachRun(from: sent, count: n, seed: seed) { run, _ in
                buffer.writeBytes(run)
                return true
            }
            sent += n
            if sent == total {
                context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { [self] result in
                    switch result {
                    case .success: context.close(mode: .output, promise: nil)
                    case .failure(let error): finish(context, "the last write failed: \(error)")
                    }
                }
                return
            }
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let count = buffer.readableBytes
        guard received + count <= total else {
            return finish(context, "more bytes came back than were sent")
        }
        let same = buffer.withUnsafeReadableBytes { got in
            forEachRun(from: received, count: count, seed: seed) { want, at in
                memcmp(want.baseAddress!, got.baseAddress! + at, want.count) == 0
            }
        }
        guard same else { return finish(context, "the echo differs in bytes \(received)..<\(received + count)") }
        received += count
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context, received == total ? nil : "the server closed early")
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(context, "\(error)")
    }
}

struct EchoError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

let arguments = CommandLine.arguments
guard arguments.count >= 3, let port = Int(arguments[2]) else {
    die("usage: nio-echo server PORT [THREADS] | nio-echo client PORT BYTES [CONNECTIONS] [TIMEOUT_S]")
}

switch arguments[1] {
case "server":
    let threads = arguments.count > 3 ? Int(arguments[3]) ?? 2 : 2
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let channel: Channel
    do {
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
            }
            .bind(host: "127.0.0.1", port: port).wait()
    } catch {
        die("cannot listen on 127.0.0.1:\(port): \(error)")
    }
    print("listening on 127.0.0.1:\(port)")
    fflush(stdout)
    try? channel.closeFuture.wait()

case "client":
    guard arguments.count >= 4, let bytes = Int(arguments[3]) else { die("client needs PORT BYTES") }
    let connections = arguments.count > 4 ? Int(arguments[4]) ?? 1 : 1
    let seconds = arguments.count > 5 ? Int64(arguments[5]) ?? 60 : 60
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let address: SocketAddress
    do { address = try SocketAddress(ipAddress: "127.0.0.1", port: port) } catch { die("\(error)") }
    var results: [EventLoopFuture<Void>] = []
    for seed in 0..<connections {
        let loop = group.next()
        let done = loop.makePromise(of: Void.self)
        let connected = ClientBootstrap(group: loop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        SendAndCheck(total: bytes, seed: seed, timeout: .seconds(seconds), done: done))
                }
            }
            .connect(to: address)
        connected.whenFailure { done.fail($0) }
        results.append(done.futureResult)
    }
    do {
        for result in results { try result.wait() }
    } catch {
        die("\(error)")
    }
    print("ok: \(connections) connection(s), \(bytes) bytes each, echoed intact")
    try? group.syncShutdownGracefully()

default:
    die("the first argument is server or client")
}
