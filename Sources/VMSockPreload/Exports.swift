import CVMSockPreload
import Glibc
import VMSock

// The Swift half of libvmsock-preload.so: what the C half (Sources/CVMSockPreload) calls to set a connection up
// and to release it. Every function here runs with the C half's `vmsp_inside` set, so the socket calls the set-up
// makes go straight to libc, and inside the set-up gate (`vmsp_setup_enter`), so that a fork never copies this
// state mid-update.

private let installHooks: Void = {
    var hooks = PreloadHooks()
    hooks.noteInternal = { vmsp_note_internal_fd($0) }
    hooks.forgetInternal = { vmsp_forget_internal_fd($0) }
    hooks.listenersAllowed = { vmsp_listeners_allowed() != 0 }
    hooks.listenersSharing = { vmsp_listeners_sharing($0) }
    hooks.claimsReady = { vmsp_claims_ready() }
    hooks.enterLibraryThread = { vmsp_enter_library_thread() }
    hooks.enterSetUp = { vmsp_setup_enter() }
    hooks.leaveSetUp = { vmsp_setup_leave() }
    hooks.welcomeAnswering = { vmsp_welcome_answering($0) }
    hooks.welcomePort = { vmsp_welcome_port($0, $1) }
    hooks.bindSource = { fd, destination in
        var source = sockaddr_storage()
        var sourceLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = destination.withSocketAddress { address, length in
            vmsp_bind_source(fd, address, length, &source, &sourceLength)
        }
        guard status == 0 else { return nil }
        return withUnsafePointer(to: &source) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { IPEndpoint(socketAddress: $0, length: sourceLength) }
        }
    }
    PreloadConnector.hooks.withLock { $0 = hooks }
    LibraryDescriptors.keepAboveHalfTheLimit()
}()

/// Copies `text` into a C buffer of `capacity` bytes, NUL-terminated, cut if it must be.
private func write(_ text: String, to buffer: UnsafeMutablePointer<CChar>, capacity: Int) {
    guard capacity > 0 else { return }
    var utf8 = Array(text.utf8.prefix(capacity - 1))
    utf8.append(0)
    utf8.withUnsafeBufferPointer { bytes in
        bytes.withMemoryRebound(to: CChar.self) { buffer.update(from: $0.baseAddress!, count: $0.count) }
    }
}

private func fill(_ info: UnsafeMutablePointer<vmsp_link_info>, with link: PreloadLink) {
    info.pointee = vmsp_link_info(
        local_base: link.localBase, peer_base: link.peerBase,
        local_capacity: UInt64(link.localCapacity), peer_capacity: UInt64(link.peerCapacity),
        control_fd: link.controlFD, space_bell_fd: link.spaceBellFD, peer_space_bell_fd: link.peerSpaceBellFD,
        data_bell_fd: link.dataBellFD, peer_data_bell_fd: link.peerDataBellFD,
        owner: Unmanaged.passRetained(link).toOpaque())
}

@_cdecl("vmsock_preload_connect")
func preloadConnect(
    _ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, _ info: UnsafeMutablePointer<vmsp_link_info>,
    _ reason: UnsafeMutablePointer<CChar>, _ reasonCapacity: Int
) -> Int32 {
    vmsp_setup_enter()
    defer { vmsp_setup_leave() }
    installHooks
    guard let destination = IPEndpoint(socketAddress: address, length: length) else {
        write("not an IPv4 or IPv6 address", to: reason, capacity: reasonCapacity)
        return 0
    }
    switch PreloadConnector.connect(fd: fd, destination: destination) {
    case .welcomed(let link):
        fill(info, with: link)
        return 1
    case .tcp(let why):
        write(why, to: reason, capacity: reasonCapacity)
        return 0
    }
}

@_cdecl("vmsock_preload_listen")
func preloadListen(_ fd: Int32, _ reason: UnsafeMutablePointer<CChar>, _ reasonCapacity: Int) -> Int32 {
    vmsp_setup_enter()
    defer { vmsp_setup_leave() }
    installHooks
    guard let bound = IPEndpoint.localAddress(of: fd) else {
        write("getsockname failed", to: reason, capacity: reasonCapacity)
        return 0
    }
    if let why = PreloadListeners.shared.listen(fd: fd, bound: bound) {
        write(why, to: reason, capacity: reasonCapacity)
        return 0
    }
    return 1
}

@_cdecl("vmsock_preload_forget_copied_listeners")
func preloadForgetCopiedListeners() {
    vmsp_setup_enter()
    defer { vmsp_setup_leave() }
    PreloadListeners.shared.forgetCopiedState()
}

@_cdecl("vmsock_preload_unlisten")
func preloadUnlisten(_ fd: Int32) {
    vmsp_setup_enter()
    defer { vmsp_setup_leave() }
    PreloadListeners.shared.unlisten(fd: fd)
}

@_cdecl("vmsock_preload_accept")
func preloadAccept(
    _ listener: Int32, _ fd: Int32, _ info: UnsafeMutablePointer<vmsp_link_info>,
    _ reason: UnsafeMutablePointer<CChar>, _ reasonCapacity: Int
) -> Int32 {
    vmsp_setup_enter()
    defer { vmsp_setup_leave() }
    switch PreloadListeners.shared.accept(listener: listener, fd: fd) {
    case .success(let link):
        fill(info, with: link)
        return 1
    case .failure(let refusal):
        write(refusal.description, to: reason, capacity: reasonCapacity)
        return 0
    }
}

@_cdecl("vmsock_preload_release")
func preloadRelease(_ owner: UnsafeMutableRawPointer) {
    vmsp_setup_enter()
    defer { vmsp_setup_leave() }
    Unmanaged<PreloadLink>.fromOpaque(owner).release()
}
