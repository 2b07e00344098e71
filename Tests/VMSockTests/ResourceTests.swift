import CLibevent
import Foundation
@_spi(Testing) import VMSock
import XCTest

final class ResourceTests: XCTestCase {
    /// 10,000 connect/close cycles leave no descriptor and no mapping behind: half of them reopen the link the
    /// previous one left (the default), half make a new link each, and once the listener is closed and the
    /// connector's idle links are freed nothing is left.
    func testConnectCloseCyclesLeakNothing() throws {
        do {  // first use sets up whatever the runtime keeps for good (thread stacks, Foundation caches)
            let (server, client) = try connectedPair()
            server.close()
            client.close()
        }
        VMSocket.closeIdleLinks()  // earlier tests' links are not this test's to count
        // The warm-up's accept thread still holds its listener and accepted socket until the thread exits, which
        // may be just after `connectedPair` returned: wait until the count settles.
        let fds = settledDescriptorCount() - sanitizerPipes()
        let maps = mappingCount()
        let port = freePortText()
        let listener = try VMListener(address: .port(port), options: VMSocketOptions(ringSize: 4096))
        let cycles = 10_000
        let server = Background {
            for _ in 0..<cycles {
                let socket = try listener.accept()
                _ = try socket.read(upTo: 1)
                socket.close()
            }
        }
        let reusedBefore = TransportStatistics.current.sharedMemoryReused
        func cycle(reuse: Bool) throws {
            var options = VMSocketOptions(ringSize: 4096)
            options.reusesLinks = reuse
            let socket = try VMSocket.connect(to: .port(port), options: options)
            try socket.writeAll([1])
            socket.close()
        }
        for index in 0..<cycles { try cycle(reuse: index < cycles / 2) }
        XCTAssertNoThrow(try XCTUnwrap(server.wait(timeout: 120)).get())
        XCTAssertGreaterThan(TransportStatistics.current.sharedMemoryReused - reusedBefore, 0, "no link was reused")
        listener.close()
        VMSocket.closeIdleLinks()
        XCTAssertEqual(openDescriptorCount() - sanitizerPipes(), fds, "descriptors leaked")
        if !underThreadSanitizer {  // its shadow memory maps more as the process touches more
            XCTAssertLessThanOrEqual(mappingCount(), maps + 2, "mappings leaked (a couple may come from the allocator)")
        }
    }

    /// ThreadSanitizer starts its symbolizer, talking to it through two pipes, the first time it needs a stack's
    /// names (a suppressed race is enough); nothing of ours makes pipes.
    private var underThreadSanitizer: Bool { ProcessInfo.processInfo.environment["VMSOCK_SANITIZER"] == "thread" }

    private func sanitizerPipes() -> Int {
        guard underThreadSanitizer else { return 0 }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return names.count { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0))?.hasPrefix("pipe:") == true }
    }

    /// The memory we hand the peer can never be made writable by it: the seals forbid it.
    func testPeerCannotMapOurRingWritable() throws {
        let fd = try RawControl.makeRegion(capacity: 4096)
        defer { close(fd) }
        let writable = mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        XCTAssertEqual(writable, MAP_FAILED, "a writable shared mapping must be refused")
        XCTAssertEqual(errno, EPERM)
        var byte: UInt8 = 1
        XCTAssertEqual(pwrite(fd, &byte, 1, 4096), -1, "write(2) must be refused too")
        XCTAssertEqual(ftruncate(fd, 0), -1, "shrinking must be refused (it would SIGBUS the reader)")
        let readable = mmap(nil, 8192, PROT_READ, MAP_SHARED, fd, 0)
        XCTAssertNotEqual(readable, MAP_FAILED, "read-only is what the peer gets")
        if readable != MAP_FAILED {
            XCTAssertEqual(mprotect(readable, 8192, PROT_READ | PROT_WRITE), -1, "and it cannot upgrade that mapping")
            munmap(readable, 8192)
        }
    }

    func testLibeventLinks() {
        XCTAssertTrue(Libevent.version.hasPrefix("2.1"), Libevent.version)
        XCTAssertTrue(Libevent.enableThreads())
        let base = event_base_new()
        XCTAssertNotNil(base)
        event_base_free(base)
    }
}
