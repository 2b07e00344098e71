// swift-tools-version: 6.0
// An ordinary SwiftNIO echo server and client, built on their own (not part of vmsock): what
// interop/preload-swiftnio.test.sh runs unchanged under vmsock-run (issue 19). NIOPosix's event loop is epoll
// with an eventfd for wake-ups and a timerfd for scheduled tasks, which is what the test is after.
import PackageDescription

let package = Package(
    name: "nio-echo",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", .upToNextMinor(from: "2.101.0")),
    ],
    targets: [
        .executableTarget(
            name: "nio-echo",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]  // an ordinary NIO program of the kind people have, not a concurrency exercise
)
