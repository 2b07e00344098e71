// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "vmsock",
    products: [
        .library(name: "VMSock", targets: ["VMSock"]),
        // The C API: libvmsock.so, with Sources/CVMSockAPI/include/vmsock.h as its header (issue 18).
        .library(name: "vmsock", type: .dynamic, targets: ["VMSockCAPI"]),
        .executable(name: "vmcat", targets: ["vmcat"]),
        .executable(name: "vmperf", targets: ["vmperf"]),
        .executable(name: "vmsockd", targets: ["vmsockd"]),
        // LD_PRELOAD library for unmodified programs, and the command that runs them under it (issue 18).
        .library(name: "vmsock-preload", type: .dynamic, targets: ["VMSockPreload"]),
        .executable(name: "vmsock-run", targets: ["vmsock-run"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // What Swift cannot import: memfd, eventfd, epoll, SCM_RIGHTS macros, SO_PEERCRED, atomics on mapped memory.
        .target(name: "CVMSock"),
        // Debian's libevent-dev 2.1; evthread_use_pthreads lives in libevent_pthreads.
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent_pthreads",
            providers: [.apt(["libevent-dev"])]
        ),
        // Ring layout and index arithmetic: no syscalls, no knowledge of where the memory came from.
        .target(name: "VMSockRing", dependencies: ["CVMSock"]),
        // Memory and doorbells, the control path, the socket API.
        .target(name: "VMSock", dependencies: ["VMSockRing", "CVMSock", "CLibevent"]),
        // The C API's public header (include/vmsock.h), and the checks that pin its constants and layout.
        .target(name: "CVMSockAPI"),
        // What a C facade needs beside VMSocket: the lock-free handle table, errno and the last error, sockaddr
        // out-parameters. Kept apart from the exports so that a preload library can sit on it too.
        .target(name: "VMSockHandles", dependencies: ["VMSock", "CVMSock"]),
        // The `@_cdecl` exports of vmsock.h, one thin function per call, in the vmsock product.
        .target(name: "VMSockCAPI", dependencies: ["VMSockHandles", "VMSock", "CVMSockAPI"]),
        // netcat over vmsock, with OpenBSD nc's flags (issue 5).
        .executableTarget(name: "vmcat", dependencies: ["VMSock"]),
        // What vmperf and its paper benchmark share: the JSON writer, the report (stdout or --logfile) and its
        // one-line failures, CPU affinity.
        .target(name: "VMPerfSupport", dependencies: ["CVMSock"]),
        // `vmperf --paper`: Table 1 of the seed paper, two processes ping-ponging through one shared page.
        .target(name: "VMPerfPaper", dependencies: ["VMPerfSupport", "VMSock", "CVMSock"]),
        // iperf3 for vmsock: throughput, latency, the comparison with TCP and Unix sockets, the paper's Table 1 (issue 6).
        .executableTarget(
            name: "vmperf",
            dependencies: [
                "VMSock", "CVMSock", "VMPerfSupport", "VMPerfPaper",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The host broker unmodified QEMU talks to: QEMU's ivshmem-server protocol, one shared region (issue 16).
        .executableTarget(
            name: "vmsockd",
            dependencies: ["VMSock", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // vmsock-run's preload library: the interposed libc calls and the shared-memory data path, in C (no Swift
        // runtime on a call that is not ours, nothing that could re-enter itself) ...
        .target(name: "CVMSockPreload", dependencies: ["CVMSock"]),
        // ... and the set-up it calls, in Swift (the registry and handshake of VMSock).
        .target(name: "VMSockPreload", dependencies: ["VMSock", "CVMSockPreload"]),
        // `vmsock-run [--debug] COMMAND`: LD_PRELOAD set to the library next to it, then exec.
        .executableTarget(name: "vmsock-run"),
        // The other process in cross-process tests: a well-behaved peer, a hostile one, a victim to kill -9.
        .executableTarget(name: "vmsock-testpeer", dependencies: ["VMSock", "VMSockRing", "CVMSock"]),
        .testTarget(name: "VMCatTests", dependencies: ["vmcat", "VMSock"]),
        .testTarget(name: "VMPerfTests", dependencies: ["vmperf"]),
        .testTarget(name: "VMSockRingTests", dependencies: ["VMSockRing"]),
        .testTarget(name: "VMSockdTests", dependencies: ["vmsockd", "VMSock", "VMSockRing", "vmsock-testpeer", "vmcat", "vmperf"]),
        .testTarget(name: "VMSockHandlesTests", dependencies: ["VMSockHandles", "VMSock"]),
        .testTarget(name: "VMSockTests", dependencies: ["VMSock", "VMSockRing", "CVMSock", "CLibevent", "vmsock-testpeer"]),
    ]
)
