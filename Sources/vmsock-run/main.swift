import Glibc

// vmsock-run [--debug] [--stats] [--] COMMAND [ARGS...]: runs COMMAND with libvmsock-preload.so preloaded (as smc_run does),
// so that its TCP connections to other programs run under vmsock-run on this host go through shared memory.
// The library is the one next to this executable, or VMSOCK_PRELOAD_LIBRARY.

let usage = """
    usage: vmsock-run [--debug] [--stats] [--] COMMAND [ARGS...]
      Runs COMMAND with its TCP connections carried through shared memory when the other end runs under
      vmsock-run on this host too, and plain TCP otherwise (decided per connection).
      --debug   print one line per connection on standard error: the transport, and for TCP why (VMSOCK_DEBUG=1)
      --stats   print one line per process at exit on standard error: its connects and accepts by transport, and
                the wake-ups it sent (VMSOCK_STATS=1; --debug prints it too)

    """

func print(_ text: String, to fd: Int32) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        bytes = bytes.dropFirst(n)
    }
}

func fail(_ message: String, status: Int32) -> Never {
    print("vmsock-run: \(message)\n", to: 2)
    exit(status)
}

func libraryPath() -> String {
    if let explicit = getenv("VMSOCK_PRELOAD_LIBRARY"), explicit.pointee != 0 { return String(cString: explicit) }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { fail("cannot find its own path: \(String(cString: strerror(errno)))", status: 1) }
    let executable = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let directory = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    return directory + "/libvmsock-preload.so"
}

// `vmsock-run --spawned PATH ARGV0 [ARGS...]`: not for users. The library, in a process under vmsock-run, spawns a
// program that will not load it through this (the library's trampoline.c): the library, preloaded here alone for
// that, has put the connections' relays in place in its constructor; the program now runs with its own argv and
// the environment it was given, its LD_PRELOAD (kept in VMSOCK_SPAWN_PRELOAD) back. Bytes as they are: no String.
if CommandLine.argc >= 3, strcmp(CommandLine.unsafeArgv[1]!, "--spawned") == 0 {
    if let theirs = getenv("VMSOCK_SPAWN_PRELOAD") {
        setenv("LD_PRELOAD", theirs, 1)
        unsetenv("VMSOCK_SPAWN_PRELOAD")
    } else {
        unsetenv("LD_PRELOAD")
    }
    let path = CommandLine.unsafeArgv[2]!
    execv(path, CommandLine.unsafeArgv + 3)
    let error = errno
    fail("\(String(cString: path)): \(String(cString: strerror(error)))", status: error == ENOENT ? 127 : 126)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var debug = false
var stats = false
while let first = arguments.first, first.hasPrefix("-") {
    arguments.removeFirst()
    switch first {
    case "--": break
    case "--debug", "-d": debug = true; continue
    case "--stats", "-s": stats = true; continue
    case "--help", "-h": print(usage, to: 1); exit(0)
    default: print(usage, to: 2); fail("unknown option \(first)", status: 2)
    }
    break
}
guard let command = arguments.first else {
    print(usage, to: 2)
    fail("missing COMMAND", status: 2)
}

let library = libraryPath()
guard access(library, R_OK) == 0 else { fail("the preload library \(library) is missing or unreadable", status: 1) }
let existing = getenv("LD_PRELOAD").map { String(cString: $0) } ?? ""
setenv("LD_PRELOAD", existing.isEmpty ? library : library + " " + existing, 1)
if debug { setenv("VMSOCK_DEBUG", "1", 1) }
if stats { setenv("VMSOCK_STATS", "1", 1) }
// The library brings the Swift runtime, whose backtracer would install crash handlers (SIGSEGV, SIGQUIT...) in a
// program that never asked for them: a crash would print a Swift report. Off, unless the caller chose.
setenv("SWIFT_BACKTRACE", "enable=no", 0)

var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
execvp(command, &argv)
let error = errno
fail("\(command): \(String(cString: strerror(error)))", status: error == ENOENT ? 127 : 126)
