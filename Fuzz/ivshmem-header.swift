// Fuzz target: vmsockd's region header and slots as a client reads them (IvshmemHeader.validate, liveness),
// over memory of exactly the region's table size that AddressSanitizer guards.
// The input picks the memory's real size (valid or not), starts from the header the daemon would write for it
// (or not), rewrites some header bytes, then reads the liveness of some slots.
// Invariants: the header is accepted only when every field matches the size; an accepted geometry fits in the
// memory (slot table inside, arena after it and to the end); a slot read stays inside the table (ASan); a process
// slot is only ever rung through a peer id; the daemon's judge of process slots reads only the table.
import VMSockRing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIvshmemHeader(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let shift = Int(input.byte() % 40)
    let size = input.bool() ? 1 << shift : (1 << shift) + Int(input.integer(Int16.self))
    let written = IvshmemLayout.Geometry(regionSize: size) ?? IvshmemLayout.Geometry(regionSize: 1 << (16 + Int(input.byte() % 21)))!
    // Only the header and the slot table are ever read; the arena is not mapped here (an access is an ASan error).
    let length = max(IvshmemLayout.headerSize, min(max(size, 0), written.arenaOffset))
    let base = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
    defer { base.deallocate() }
    // The header, and the slot tables of up to 1024 slots (the judge below reads every process slot of those);
    // larger tables' slots are written before they are read.
    base.initializeMemory(as: UInt8.self, repeating: 0, count: min(length, IvshmemLayout.headerSize + 1024 * IvshmemLayout.slotSize))
    if input.byte() != 0xFF, written.arenaOffset <= length {
        IvshmemHeaderWriter(base: base, geometry: written).initialize(
            vectors: Int(input.byte() % 66), instance: input.integer(UInt64.self), daemonPID: 1)
    }
    for _ in 0..<Int(input.byte() % 4) {
        base.storeBytes(of: input.byte(), toByteOffset: Int(input.byte()) % 128, as: UInt8.self)
    }
    let header = IvshmemHeader(base: base)
    guard let fields = try? header.validate(regionSize: size) else {
        _ = (try? header.validate(regionSize: size)).map { "\($0)" }
        return 0
    }
    let geometry = fields.geometry
    require(geometry.regionSize == size && IvshmemLayout.isValid(regionSize: size), "accepted a header for \(size) bytes")
    require((1...IvshmemLayout.maximumVectors).contains(fields.vectors), "accepted \(fields.vectors) vectors")
    require(geometry.peerSlots >= 1 && geometry.peerSlots <= IvshmemLayout.maximumPeers, "\(geometry.peerSlots) slots")
    require(geometry.slotTableOffset >= IvshmemLayout.headerSize, "slot table inside the header")
    require(geometry.slotOffset(geometry.peerSlots) <= geometry.arenaOffset, "slot table runs into the arena")
    require(geometry.arenaOffset + geometry.arenaSize == size && geometry.arenaSize >= 0, "arena past the region")
    require(geometry.arenaOffset <= length, "the table is larger than the memory it was checked against")
    // What a guest reads of the header besides: any count word gives at most four 4-byte aliases.
    let aliases = header.hostAliases
    require(aliases.count <= IvshmemLayout.maximumHostAliases && aliases.allSatisfy { $0.count == 4 }, "\(aliases.count) aliases")
    _ = (header.heartbeat, header.hostKey)
    for _ in 0..<Int(input.byte() % 4) {
        let id = Int(input.integer(UInt32.self)) % geometry.peerSlots
        let slot = base + geometry.slotOffset(id)
        slot.storeBytes(of: input.integer(UInt64.self), as: UInt64.self)
        let liveness = header.liveness(of: id, in: geometry)
        require(liveness.word == slot.load(as: UInt64.self), "liveness word read back differently")
        // A process slot's via word, as a peer would write it: it names a peer id, or nothing.
        slot.storeBytes(of: input.integer(UInt64.self), toByteOffset: IvshmemLayout.SlotOffset.via, as: UInt64.self)
        let processes = IvshmemProcessSlots(base: base, geometry: geometry)
        if let vm = processes.vm(of: id) {
            require(geometry.isProcessSlot(id) && vm.id < geometry.firstProcessSlot, "slot \(id) rung through \(vm)")
        }
    }
    // The daemon's judge over whatever the slots hold (small tables only, to keep the runs fast; the slots not
    // written above read as zero): it reads only inside the table (ASan), looking twice a timeout apart.
    if geometry.peerSlots <= 1024 {
        let table = base + geometry.slotOffset(geometry.firstProcessSlot)
        for _ in 0..<Int(input.byte() % 8) {
            let id = Int(input.byte()) % geometry.processSlots
            for word in 0..<5 {
                table.storeBytes(of: input.integer(UInt64.self), toByteOffset: id * IvshmemLayout.slotSize + word * 8, as: UInt64.self)
            }
        }
        var judge = IvshmemProcessJudge(base: base, geometry: geometry)
        for step in 0..<3 { _ = judge.scan(nowMs: 1000 + UInt64(step * IvshmemLayout.processTimeoutMs)) }
    }
    return 0
}
