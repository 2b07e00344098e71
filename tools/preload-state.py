# The preload library's epoll records in a running process: each set, its registrations, and for each live one
# its connection's ring words. For a program that waits for ever under vmsock-run (tools/bench-servers.sh runs
# it on a haproxy that outlives its soft stop). Needs gdb and a library built with debug information (release
# builds have it).
# Usage: gdb -batch -p PID -x tools/preload-state.py
import gdb

# stream.c's layout of a ring's header page.
OFF_PRODUCER, OFF_CONSUMER, OFF_ARM, OFF_SHUTDOWN = 128, 256, 384, 640


def word(address, kind="unsigned long long"):
    return int(gdb.parse_and_eval("*(%s *)%d" % (kind, address))) & 0xffffffffffffffff


def ring_words(c):
    local, peer = int(c["local"]), int(c["peer"])
    arm = word(local + OFF_ARM)
    return ("in: produced %d consumed %d, peer shut bits %d, arm generation %d sleepers %d bell %d; "
            "out: produced %d consumed %d; wake-ups sent %d received %d" % (
                word(peer + OFF_PRODUCER), word(local + OFF_CONSUMER), word(peer + OFF_SHUTDOWN, "unsigned int"),
                arm & 0xffffffff, (arm >> 40) & 0xff, (arm >> 32) & 1,
                int(c["tx_pos"]), word(peer + OFF_CONSUMER), int(c["sent"]), int(c["drained"])))


def main():
    try:
        sets = gdb.parse_and_eval("'epoll.c'::sets")
    except gdb.error:
        print("no vmsock-run library in this process (or one built without debug information)")
        return
    if int(sets) == 0:
        print("no epoll set made through the library")
        return
    for fd in range(int(gdb.parse_and_eval("'epoll.c'::sets_high")) + 1):
        if int(sets[fd]) == 0:
            continue
        s = sets[fd].dereference()
        print("set %d (serial %d): %d slots, %d sleepers in it now" % (fd, int(s["serial"]), int(s["count"]),
                                                                      int(s["sleepers"])))
        for i in range(int(s["count"])):
            r = s["regs"][i]
            if int(r["fd"]) < 0 and int(r["parked_serial"]) == 0:
                continue
            kind = "connection" if int(r["kind"]) == 1 else "set"
            print("  slot %d: %s fd %d serial %d events %#x quiet %d armed %d idle %d disabled %d kernel bits %#x "
                  "last in %#x parked %d at %d" % (
                      i, kind, int(r["fd"]), int(r["serial"]), int(r["events"]), int(r["quiet"]), int(r["rx_armed"]),
                      int(r["idle"]), int(r["disabled"]), int(r["kernel_bits"]),
                      int(r["last_in"]) & 0xffffffffffffffff, int(r["parked_serial"]), int(r["parked_fd"])))
            ref = gdb.parse_and_eval("vmsp_table[%d]" % int(r["fd"])) if int(r["fd"]) >= 0 else None
            if ref is not None and int(ref) != 0 and int(r["kind"]) == 1:
                ref = ref.dereference()
                print("    fd %d now: serial %d; %s" % (int(r["fd"]), int(ref["serial"]),
                                                       ring_words(ref["conn"].dereference())))


main()
