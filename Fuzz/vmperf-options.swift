// Fuzz target: vmperf's command line (Sources/vmperf/Command, swift-argument-parser), as argument vectors: the
// input's zero bytes separate the words. As the entry point does, attached values are split first, and a
// refused command line is turned into its message.
// Invariants: no crash (the parser, `validate()`, the messages, and what a parsed command line is asked next:
// its role, ring sizes, block size, CPUs, duration).
import ArgumentParser
@testable import vmperf

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVmperfOptions(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let arguments = Options.splittingAttachedValues(input.words())
    do {
        let options = try Options.parse(arguments)
        _ = options.role
        _ = options.effectiveRingSize
        _ = options.connectionRingSize
        _ = options.blockSize
        _ = options.cpus
        _ = options.duration
        require((1...128).contains(options.parallel), "parallel \(options.parallel)")
        require((0...600).contains(options.omit), "omit \(options.omit)")
        require((options.bitrate?.burst ?? 1) >= 1 && (options.bitrate?.burst ?? 1) <= 1000, "burst \(String(describing: options.bitrate))")
    } catch {
        _ = Options.unsupportedIperf3Flag(arguments)
        _ = Options.exitCode(for: error)
        _ = Options.message(for: error)
        if Options.exitCode(for: error) == .success { _ = Options.fullMessage(for: error) }
    }
    return 0
}
