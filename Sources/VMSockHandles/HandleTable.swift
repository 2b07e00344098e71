import CVMSock
import Glibc
import Synchronization
import VMSock

/// The table behind the C API's handles: which `VMSocket` or `VMListener` an `int` names, found without a lock,
/// and kept alive while any call uses it, however other threads close it.
///
/// A handle is a slot number and that slot's generation:
///
/// ```
///   bit  31   30 ............ 20   19 .............. 0
///      ┌────┬─────────────────────┬───────────────────┐
///      │ 0  │ generation (1..2047)│ slot (0..1048575) │
///      └────┴─────────────────────┴───────────────────┘
/// ```
///
/// Slots live in chunks of 1024, made on demand and never freed (`vms_handle_chunks` holds their addresses), so a
/// lookup is two loads and never touches freed memory, whatever number it is given. Each slot is 64 bytes, a cache
/// line of its own, with one word of state and the object:
///
/// ```
///   state  bit 63 ........ 32   31     30        29 ............ 0
///        ┌─────────────────────┬──────┬──────────┬─────────────────┐
///        │ generation          │ open │ listener │ calls in flight │
///        └─────────────────────┴──────┴──────────┴─────────────────┘
///   object: the VMSocket or VMListener, retained once by the table (Unmanaged bits; 0 while the slot is free)
/// ```
///
/// A call enters with one compare-and-swap (the generation matches, the slot is open and of the right kind: add
/// one in flight) and leaves with one subtract. Close clears `open` (later calls fail with EBADF), closes the
/// object (which wakes blocked calls with EBADF) and leaves like a call. Whoever leaves last from a slot that is
/// no longer open releases the object, moves the slot to the next generation and frees it, so memory is never
/// freed under a call and nothing waits. Allocation and freeing take a mutex (connect, accept and close are cold);
/// the data path takes none and makes no ARC traffic: the object is used through its unretained reference.
///
/// A freed slot is reused only once 1024 others wait to be (oldest first), so a stale handle (a copy kept after
/// close) aliases a live one only after its slot came round 2047 more times, at least two million handles later.
/// Until then it gets EBADF, as a closed one does.
///
/// Threads: any call from any thread; the objects' own rules (one reader, one writer) are the caller's business.
/// A preload library, whose handles are real descriptors, would keep its own mapping from descriptor to handle
/// and use this table for lifetime and lookup the same way.
public enum HandleTable {
    /// What a slot holds.
    public enum Kind: Sendable { case connection, listener }

    @usableFromInline static let slotBits: Int32 = 20
    @usableFromInline static let generationMask: Int32 = 0x7FF
    @usableFromInline static let slotMask: Int32 = (1 << 20) - 1
    @usableFromInline static let capacity = Int(VMS_HANDLE_CHUNKS) * Int(VMS_HANDLE_CHUNK_SLOTS)

    // State word bits.
    @usableFromInline static let openBit: UInt64 = 1 << 31
    @usableFromInline static let listenerBit: UInt64 = 1 << 30
    @usableFromInline static let inFlightMask: UInt64 = (1 << 30) - 1

    // MARK: Making and closing

    /// Puts `socket` in the table. Returns its handle, or nil when every slot is taken.
    public static func insert(_ socket: VMSocket) -> Int32? {
        insert(Unmanaged.passRetained(socket).toOpaque(), listener: false)
    }

    /// Puts `listener` in the table. Returns its handle, or nil when every slot is taken.
    public static func insert(_ listener: VMListener) -> Int32? {
        insert(Unmanaged.passRetained(listener).toOpaque(), listener: true)
    }

    private static func insert(_ object: UnsafeMutableRawPointer, listener: Bool) -> Int32? {
        guard let index = Allocator.shared.take() else {
            if listener {
                Unmanaged<VMListener>.fromOpaque(object).release()
            } else {
                Unmanaged<VMSocket>.fromOpaque(object).release()
            }
            return nil
        }
        let slot = slotAddress(index)!  // taken slots are in made chunks
        let generation = slot.pointee.state.load(ordering: .relaxed) >> 32
        slot.pointee.object.store(UInt(bitPattern: object), ordering: .relaxed)
        // Release: whoever enters (an acquiring compare-and-swap that sees `open`) sees the object stored above.
        slot.pointee.state.store(generation << 32 | openBit | (listener ? listenerBit : 0), ordering: .releasing)
        return Int32(truncatingIfNeeded: generation) << slotBits | index
    }

    /// Closes what `handle` names and frees the handle: later calls with it fail with EBADF; calls blocked on it
    /// wake with EBADF (the object's close does that); the object goes once the last call using it returns.
    /// - Throws: EBADF when the handle is not open (never was, closed, stale, or a close from another thread won).
    public static func close(_ handle: Int32) throws(VMSockError) {
        let slot = try enter(handle, kind: nil)
        var state = slot.pointee.state.load(ordering: .relaxed)
        while true {
            guard state & openBit != 0 else {
                leave(slot)
                throw closedError
            }
            let (exchanged, found) = slot.pointee.state.compareExchange(
                expected: state, desired: state & ~openBit, ordering: .acquiringAndReleasing)
            if exchanged { break }
            state = found
        }
        let object = slot.pointee.object.load(ordering: .relaxed)
        if state & listenerBit != 0 {
            Unmanaged<VMListener>.fromOpaque(UnsafeRawPointer(bitPattern: object)!)._withUnsafeGuaranteedRef { $0.close() }
        } else {
            Unmanaged<VMSocket>.fromOpaque(UnsafeRawPointer(bitPattern: object)!)._withUnsafeGuaranteedRef { $0.close() }
        }
        leave(slot)
    }

    // MARK: Using

    /// Calls `body` with the connection `handle` names, which stays alive until `body` returns.
    /// - Throws: EBADF (not an open handle), ENOTCONN (a listener), or what `body` throws.
    @inlinable @inline(__always)
    public static func withConnection<R>(
        _ handle: Int32, _ body: (VMSocket) throws(VMSockError) -> R
    ) throws(VMSockError) -> R {
        let slot = try enter(handle, kind: .connection)
        defer { leave(slot) }
        let object = UnsafeRawPointer(bitPattern: slot.pointee.object.load(ordering: .relaxed))!
        return try Unmanaged<VMSocket>.fromOpaque(object)._withUnsafeGuaranteedRef { socket in
            Result { () throws(VMSockError) in try body(socket) }
        }.get()
    }

    /// Calls `body` with the listener `handle` names, which stays alive until `body` returns.
    /// - Throws: EBADF (not an open handle), EINVAL (a connection: accept on a socket that is not listening), or
    ///   what `body` throws.
    public static func withListener<R>(
        _ handle: Int32, _ body: (VMListener) throws(VMSockError) -> R
    ) throws(VMSockError) -> R {
        let slot = try enter(handle, kind: .listener)
        defer { leave(slot) }
        let object = UnsafeRawPointer(bitPattern: slot.pointee.object.load(ordering: .relaxed))!
        return try Unmanaged<VMListener>.fromOpaque(object)._withUnsafeGuaranteedRef { listener in
            Result { () throws(VMSockError) in try body(listener) }
        }.get()
    }

    /// Calls `connection` or `listener` with what `handle` names, for the calls that take both.
    /// - Throws: EBADF (not an open handle), or what the body throws.
    public static func with<R>(
        _ handle: Int32, connection: (VMSocket) throws(VMSockError) -> R,
        listener: (VMListener) throws(VMSockError) -> R
    ) throws(VMSockError) -> R {
        let slot = try enter(handle, kind: nil)
        defer { leave(slot) }
        let object = UnsafeRawPointer(bitPattern: slot.pointee.object.load(ordering: .relaxed))!
        if slot.pointee.state.load(ordering: .relaxed) & listenerBit != 0 {
            return try Unmanaged<VMListener>.fromOpaque(object)._withUnsafeGuaranteedRef { object in
                Result { () throws(VMSockError) in try listener(object) }
            }.get()
        }
        return try Unmanaged<VMSocket>.fromOpaque(object)._withUnsafeGuaranteedRef { object in
            Result { () throws(VMSockError) in try connection(object) }
        }.get()
    }

    /// What `handle` names, if it is open.
    public static func kind(of handle: Int32) throws(VMSockError) -> Kind {
        let slot = try enter(handle, kind: nil)
        defer { leave(slot) }
        return slot.pointee.state.load(ordering: .relaxed) & listenerBit != 0 ? .listener : .connection
    }

    /// Open handles (for tests: each closed handle must leave the table).
    public static var openCount: Int { Allocator.shared.inUse }

    // MARK: Entering and leaving

    @usableFromInline static let closedError = VMSockError(code: EBADF, "not an open vmsock handle (closed, stale, or never one)")

    /// Counts a call in on the slot `handle` names, if the handle is open and (unless `kind` is nil) of that kind.
    @inlinable @inline(__always)
    static func enter(_ handle: Int32, kind: Kind?) throws(VMSockError) -> UnsafeMutablePointer<Slot> {
        guard handle >= 0, let slot = slotAddress(handle & slotMask) else { throw closedError }
        let generation = UInt64(UInt32(handle >> slotBits & generationMask))
        var state = slot.pointee.state.load(ordering: .relaxed)
        while true {
            guard state >> 32 == generation, state & openBit != 0 else { throw closedError }
            if let kind, (state & listenerBit != 0) != (kind == .listener) { throw wrongKind(kind) }
            // Acquiring: pairs with the releasing store that opened the slot, so the object load sees the object.
            let (exchanged, found) = slot.pointee.state.compareExchange(
                expected: state, desired: state &+ 1, successOrdering: .acquiringAndReleasing,
                failureOrdering: .relaxed)
            if exchanged { return slot }
            state = found
        }
    }

    /// Counts a call out. The last one out of a closed slot frees it. Acquiring and releasing: every use of the
    /// object by any call happens before the release of the object by whoever leaves last.
    @inlinable @inline(__always)
    static func leave(_ slot: UnsafeMutablePointer<Slot>) {
        let left = slot.pointee.state.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue
        if left & (openBit | inFlightMask) == 0 { free(slot, state: left) }
    }

    @usableFromInline
    static func wrongKind(_ wanted: Kind) -> VMSockError {
        wanted == .connection
            ? VMSockError(code: ENOTCONN, "the handle is a listener, not a connection")
            : VMSockError(code: EINVAL, "the handle is a connection, not a listener")
    }

    /// Releases the object of a closed slot nobody uses any more, and frees the slot for the next generation.
    @usableFromInline
    static func free(_ slot: UnsafeMutablePointer<Slot>, state: UInt64) {
        let object = UnsafeRawPointer(bitPattern: slot.pointee.object.exchange(0, ordering: .acquiring))!
        var generation = ((state >> 32) + 1) & UInt64(generationMask)
        if generation == 0 { generation = 1 }  // 0 is never valid, so a zeroed int is never a handle
        // No `open` bit: nobody can enter until the allocator hands the slot out again, after this store.
        slot.pointee.state.store(generation << 32, ordering: .releasing)
        if state & listenerBit != 0 {
            Unmanaged<VMListener>.fromOpaque(object).release()
        } else {
            Unmanaged<VMSocket>.fromOpaque(object).release()
        }
        Allocator.shared.give(back: slot.pointee.index)
    }

    /// The slot with number `index` (0...capacity - 1), or nil if its chunk was never made.
    @inlinable @inline(__always)
    static func slotAddress(_ index: Int32) -> UnsafeMutablePointer<Slot>? {
        let chunk = vms_handle_chunk_load(UInt32(index) / UInt32(VMS_HANDLE_CHUNK_SLOTS))
        guard chunk != 0 else { return nil }
        let slot = Int(index) % Int(VMS_HANDLE_CHUNK_SLOTS)
        return UnsafeMutableRawPointer(bitPattern: UInt(chunk))!.advanced(by: slot * Slot.stride)
            .assumingMemoryBound(to: Slot.self)
    }

    // MARK: Slots

    /// One slot; see the table's notes for the state word.
    @usableFromInline
    struct Slot: ~Copyable {
        @usableFromInline let state: Atomic<UInt64>
        /// `Unmanaged` bits of the object; 0 while the slot is free.
        @usableFromInline let object: Atomic<UInt>
        /// The slot's own number, to give it back.
        let index: Int32

        /// A cache line each: two slots used by two threads never share one.
        @usableFromInline static let stride = 64

        init(index: Int32) {
            state = Atomic(1 << 32)  // generation 1, free
            object = Atomic(0)
            self.index = index
        }
    }

    /// Hands out slot numbers: the oldest freed one once `reuseAfter` wait, else the next never used, making
    /// chunks as needed. So a freed slot comes back only after at least `reuseAfter` other handles were handed
    /// out, and a stale handle aliases a live one only after 2047 x 1024 (about two million) of them; the price is
    /// up to 1024 slots (64 KiB) more than the most handles ever open at once.
    final class Allocator: Sendable {
        static let shared = Allocator()
        static let reuseAfter = 1024

        private struct Numbers {
            /// Freed slot numbers, oldest first: a ring of `capacity` entries, `head` and `count` into it.
            var freed: UnsafeMutablePointer<Int32>?
            var head = 0
            var count = 0
            /// Slots ever handed out: the next never-used number.
            var made: Int32 = 0
            var inUse = 0
        }

        private let numbers = Mutex(Numbers())

        var inUse: Int { numbers.withLock { $0.inUse } }

        func take() -> Int32? {
            numbers.withLock { numbers -> Int32? in
                if numbers.count >= Self.reuseAfter || (numbers.count > 0 && Int(numbers.made) == HandleTable.capacity) {
                    let index = numbers.freed![numbers.head]
                    numbers.head = (numbers.head + 1) % HandleTable.capacity
                    numbers.count -= 1
                    numbers.inUse += 1
                    return index
                }
                guard Int(numbers.made) < HandleTable.capacity else { return nil }
                let index = numbers.made
                let perChunk = Int32(VMS_HANDLE_CHUNK_SLOTS)
                if index % perChunk == 0 { Self.makeChunk(index / perChunk, firstSlot: index) }
                numbers.made += 1
                numbers.inUse += 1
                return index
            }
        }

        func give(back index: Int32) {
            numbers.withLock { numbers in
                if numbers.freed == nil {
                    // 4 MiB of address space, touched only as far as slots are freed at once.
                    numbers.freed = .allocate(capacity: HandleTable.capacity)
                }
                numbers.freed![(numbers.head + numbers.count) % HandleTable.capacity] = index
                numbers.count += 1
                numbers.inUse -= 1
            }
        }

        private static func makeChunk(_ chunk: Int32, firstSlot: Int32) {
            let slots = Int(VMS_HANDLE_CHUNK_SLOTS)
            let memory = UnsafeMutableRawPointer.allocate(byteCount: slots * Slot.stride, alignment: Slot.stride)
            for slot in 0..<slots {
                (memory + slot * Slot.stride).bindMemory(to: Slot.self, capacity: 1)
                    .initialize(to: Slot(index: firstSlot + Int32(slot)))
            }
            // Release: a lookup that loads this address (acquire) sees the slots initialized.
            vms_handle_chunk_store(UInt32(chunk), UInt64(UInt(bitPattern: memory)))
        }
    }
}
