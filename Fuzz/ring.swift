// Fuzz target: the peer's ring header and positions as our consumer and producer read them (RingConsumer,
// RingProducer, PeerHeader.validate), over plain memory that AddressSanitizer guards byte for byte.
// The input is a sequence of steps: the peer stores a producer or consumer position (near ours or anything at
// all), we refresh and check it, read or write some bytes, or the peer rewrites its fixed header fields. Starting
// positions come from the input too, so the 2^64 wrap is reached.
// Invariants: a position is accepted exactly when it lies in its window (written here independently, relative to
// our own position); a refused one changes nothing; readable and free bytes never exceed the capacity; every copy
// stays inside the data area (ASan) and moves the bytes the positions say; our header holds our positions.
@testable import VMSockRing

private let pattern: (UInt64) -> UInt8 = { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRing(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let capacity = RingLayout.minimumCapacity << Int(input.byte() % 3)
    let mirrored = input.bool()
    let mask = UInt64(capacity - 1)
    // Exactly the bytes a mapping would give: one data area, or two views of it back to back.
    let span = mirrored ? 2 * capacity : capacity
    let peerData = UnsafeMutableRawPointer.allocate(byteCount: span, alignment: 64)
    let ourData = UnsafeMutableRawPointer.allocate(byteCount: span, alignment: 64)
    let ourHeader = UnsafeMutableRawPointer.allocate(byteCount: RingLayout.headerSize, alignment: 4096)
    let peerHeader = UnsafeMutableRawPointer.allocate(byteCount: RingLayout.headerSize, alignment: 4096)
    defer { [peerData, ourData, ourHeader, peerHeader].forEach { $0.deallocate() } }
    // The peer's data: byte i of its stream is pattern(i), in both views.
    for i in 0..<span { peerData.storeBytes(of: pattern(UInt64(i) & mask), toByteOffset: i, as: UInt8.self) }
    ourData.initializeMemory(as: UInt8.self, repeating: 0, count: span)
    LocalHeader(base: ourHeader).initialize(capacity: capacity)
    LocalHeader(base: peerHeader).initialize(capacity: capacity)
    let local = LocalHeader(base: ourHeader)
    let peer = PeerHeader(base: UnsafeRawPointer(peerHeader))

    var consumer = RingConsumer(data: peerData, capacity: capacity, mirrored: mirrored, local: local, peer: peer)
    var producer = RingProducer(data: ourData, capacity: capacity, mirrored: mirrored, local: local, peer: peer)
    let start = input.pick([0, 0, UInt64.max - UInt64(capacity), UInt64.max - 10, 1 << 63])
    consumer._position = start
    consumer.peerProduced = start
    producer._position = start &+ UInt64(input.integer(UInt16.self))
    producer.peerConsumed = producer._position
    func storePeer(_ offset: Int, _ value: UInt64) { peerHeader.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
    storePeer(RingLayout.Offset.producerPosition, start)
    storePeer(RingLayout.Offset.consumerPosition, producer._position)

    while !input.isEmpty {
        switch input.byte() % 9 {
        case 0:  // the peer publishes: a position near ours, before or after the window
            let delta = Int64(input.integer(Int32.self)) % Int64(3 * capacity)
            storePeer(RingLayout.Offset.producerPosition, consumer.position &+ UInt64(bitPattern: delta))
        case 1:  // the peer's consumer position, near our producer position
            let delta = Int64(input.integer(Int32.self)) % Int64(3 * capacity)
            storePeer(RingLayout.Offset.consumerPosition, producer.position &- UInt64(bitPattern: delta))
        case 2:  // anything at all, in either word
            let word = input.bool() ? RingLayout.Offset.producerPosition : RingLayout.Offset.consumerPosition
            storePeer(word, input.integer(UInt64.self))
        case 3:  // we read the peer's producer position
            let seen = peerHeader.load(fromByteOffset: RingLayout.Offset.producerPosition, as: UInt64.self)
            let last = consumer.peerProduced
            let lastAhead = last &- consumer.position  // never more than a ring: an invariant
            let ahead = seen &- consumer.position
            let inWindow = ahead >= lastAhead && ahead <= UInt64(capacity)
            do {
                let available = try consumer.refreshAvailable()
                require(inWindow, "accepted producer position \(seen) (ours \(consumer.position), last \(last))")
                require(available >= 0 && available <= capacity, "\(available) readable in a \(capacity)-byte ring")
                require(UInt64(available) == ahead, "readable \(available), the peer is \(ahead) ahead")
            } catch {
                require(!inWindow, "refused producer position \(seen) (ours \(consumer.position), last \(last))")
                require(consumer.peerProduced == last, "a refused position was kept")
            }
        case 4:  // we read the peer's consumer position
            let seen = peerHeader.load(fromByteOffset: RingLayout.Offset.consumerPosition, as: UInt64.self)
            let last = producer.peerConsumed
            let lastBehind = producer.position &- last  // never more than a ring: an invariant
            let behind = producer.position &- seen
            let inWindow = behind <= lastBehind
            do {
                let free = try producer.refreshFreeSpace()
                require(inWindow, "accepted consumer position \(seen) (ours \(producer.position), last \(last))")
                require(free >= 0 && free <= capacity, "\(free) free in a \(capacity)-byte ring")
                require(UInt64(free) == UInt64(capacity) - behind, "free \(free), the peer is \(behind) behind")
            } catch {
                require(!inWindow, "refused consumer position \(seen) (ours \(producer.position), last \(last))")
                require(producer.peerConsumed == last, "a refused position was kept")
            }
        case 5:  // copying read of part of what is readable, maybe skipping some
            let available = consumer.cachedAvailable
            let n = available == 0 ? 0 : Int(input.integer(UInt16.self)) % (available + 1)
            let skip = n == 0 ? 0 : Int(input.byte()) % (n + 1)
            let out = UnsafeMutableRawPointer.allocate(byteCount: max(n - skip, 1), alignment: 1)
            defer { out.deallocate() }
            consumer.copyOut(out, count: n - skip, skipping: skip)
            for i in 0..<(n - skip) {
                let expected = pattern((consumer.position &+ UInt64(skip + i)) & mask)
                require(out.load(fromByteOffset: i, as: UInt8.self) == expected, "read the wrong byte at \(i)")
            }
            consumer.consume(n)
            require(ourHeader.load(fromByteOffset: RingLayout.Offset.consumerPosition, as: UInt64.self) == consumer.position,
                    "our header does not hold our consumer position")
        case 6:  // zero-copy read
            let view = consumer.contiguousAvailable
            require(view.count <= consumer.cachedAvailable, "a view longer than what is readable")
            for i in 0..<view.count {
                require(view[i] == pattern((consumer.position &+ UInt64(i)) & mask), "viewed the wrong byte at \(i)")
            }
            consumer.consume(view.count == 0 ? 0 : Int(input.byte()) % (view.count + 1))
        case 7:  // copying write, or an in-place write of the contiguous space
            let free = producer.cachedFreeSpace
            let n = free == 0 ? 0 : Int(input.integer(UInt16.self)) % (free + 1)
            if input.bool() {
                let source = [UInt8](repeating: input.byte(), count: max(n, 1))
                source.withUnsafeBytes { producer.copyIn($0.baseAddress!, count: n) }
                let offset = Int(producer.position & mask)
                for i in 0..<n {
                    let at = mirrored ? offset + i : (offset + i) & Int(mask)
                    require(ourData.load(fromByteOffset: at, as: UInt8.self) == source[0], "wrote to the wrong place")
                }
                producer.publish(n)
            } else {
                let space = producer.contiguousFreeSpace
                require(space.count <= free, "a contiguous space larger than the free space")
                space.initializeMemory(as: UInt8.self, repeating: 0xA5)
                producer.publish(space.count)
            }
            require(ourHeader.load(fromByteOffset: RingLayout.Offset.producerPosition, as: UInt64.self) == producer.position,
                    "our header does not hold our producer position")
        default:  // the peer's fixed header fields, as attach reads them
            peerHeader.storeBytes(of: input.byte(), toByteOffset: Int(input.byte()) % 24, as: UInt8.self)
            let valid = peerHeader.load(fromByteOffset: 0, as: UInt64.self) == RingLayout.magic.littleEndian
                && peerHeader.load(fromByteOffset: 8, as: UInt32.self) == RingLayout.version.littleEndian
                && peerHeader.load(fromByteOffset: 12, as: UInt32.self) == UInt32(RingLayout.headerSize).littleEndian
                && peerHeader.load(fromByteOffset: 16, as: UInt64.self) == UInt64(capacity).littleEndian
            let accepted = (try? peer.validate(expectedCapacity: capacity)) != nil
            require(accepted == valid, "header validation said \(accepted) for a header that is \(valid ? "" : "not ")valid")
        }
    }
    return 0
}
