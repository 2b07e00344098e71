import ArgumentParser
import VMSock

/// The command line: `vmsockd --socket PATH... [--size BYTES] [--vectors N] [--host-alias IPV4]... [-v]`. The sizes and counts are checked in
/// `validate()`, so that a bad one is one line of usage error like any other.
struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmsockd",
        abstract: "The host broker QEMU's ivshmem-doorbell talks to: one shared region and eventfds for every peer.",
        discussion: """
            Speaks QEMU's ivshmem-server protocol on a Unix socket. Point QEMU at it with \
            `-chardev socket,path=PATH,id=ivs -device ivshmem-doorbell,chardev=ivs,vectors=N` (N as --vectors). \
            Runs in the foreground; prints one line once ready; SIGINT or SIGTERM end it cleanly.
            """)

    @Option(parsing: .unconditionalSingleValue,
            help: "The Unix socket path to listen on (a stale socket file there is replaced). Repeat it to serve several regions, one per socket, for groups of VMs that must not share one.")
    var socket: [String]
    @Option(parsing: .unconditional,
            help: "Bytes of the shared region: a power of two from 64K to 64G, with an optional K, M or G suffix.")
    var size: ByteCount = ByteCount(64 << 20)
    @Option(parsing: .unconditional, help: "eventfds (interrupt vectors) per peer, 1 to 64: QEMU's vectors= must match.")
    var vectors: Int = 4
    @Option(name: .customLong("host-alias"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp(
                "An IPv4 address that names this host to guests (repeat for more, up to 4), such as QEMU user networking's 10.0.2.2: a guest dialing it reaches this host's listeners on the wildcard or loopback address.",
                valueName: "ipv4"))
    var hostAliases: [IPv4Address] = []
    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "Report every peer that joins or leaves on standard error.")
    var verbose = false

    func validate() throws {
        if socket.contains(where: \.isEmpty) { throw ValidationError("--socket needs a path") }
        if let twice = socket.first(where: { path in socket.filter { $0 == path }.count > 1 }) {
            throw ValidationError("--socket \(twice) is given twice: each region needs a socket of its own")
        }
        do {
            for configuration in serverConfigurations { try configuration.validate() }
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// One region per socket, all of the same size, vectors and aliases.
    var serverConfigurations: [IvshmemServer.Configuration] { socket.map(serverConfiguration) }

    private func serverConfiguration(_ path: String) -> IvshmemServer.Configuration {
        var configuration = IvshmemServer.Configuration(path: path)
        configuration.regionSize = size.value
        configuration.vectors = vectors
        configuration.verbose = verbose
        configuration.hostAliases = hostAliases.map(\.bytes)
        return configuration
    }
}

/// A dotted-quad IPv4 address, as `--host-alias` takes it.
struct IPv4Address: ExpressibleByArgument, Equatable {
    let bytes: [UInt8]

    init?(argument: String) {
        let parts = argument.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { part in part.count <= 3 && part.allSatisfy(\.isNumber) ? UInt8(part) : nil }
        guard bytes.count == 4 else { return nil }
        self.bytes = bytes
    }
}

/// A byte count as the other tools take it: a whole number with an optional K, M, G or T suffix (powers of 1024).
struct ByteCount: ExpressibleByArgument, Equatable {
    let value: Int

    init(_ value: Int) { self.value = value }

    init?(argument: String) {
        var digits = Substring(argument)
        var shift = 0
        if let last = digits.last, let power = "kmgt".firstIndex(of: Character(last.lowercased())) {
            shift = 10 * ("kmgt".distance(from: "kmgt".startIndex, to: power) + 1)
            digits = digits.dropLast()
        }
        guard let number = Int(digits), number >= 0, number <= Int.max >> shift else { return nil }
        value = number << shift
    }

    var defaultValueDescription: String { "64M" }
}
