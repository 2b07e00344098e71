# A TCP server that is slow to read, for the tests of a writer waiting for room: listens on 127.0.0.1:PORT, accepts
# one connection, prints "accepted", optionally shuts its writing side (half-close), reads nothing for SECONDS,
# then reads to end of stream and prints how many bytes came.
#   python3 slow-reader.py PORT SECONDS [half-close | shut-bells]
# shut-bells, under vmsock-run, plays a hostile peer first: it shuts down the writing side of every Unix stream
# socket it holds (the doorbells of its shared-memory connection, the writer's among them), with raw system calls
# that vmsock-run does not see, and prints "shut N"; then it is slow to read as above.
import ctypes, os, socket, sys, time

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1)
connection, _ = listener.accept()
print("accepted", flush=True)
if sys.argv[3:] == ["half-close"]:
    connection.shutdown(socket.SHUT_WR)
if sys.argv[3:] == ["shut-bells"]:
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_shutdown, SYS_getsockopt, SOL_SOCKET, SO_TYPE, SO_DOMAIN = 48, 55, 1, 3, 39  # x86-64

    def option(fd, name):
        value, length = ctypes.c_int(0), ctypes.c_uint(4)
        ok = libc.syscall(SYS_getsockopt, fd, SOL_SOCKET, name, ctypes.byref(value), ctypes.byref(length)) == 0
        return value.value if ok else -1

    shut = 0
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
        if fd > 2 and option(fd, SO_DOMAIN) == socket.AF_UNIX and option(fd, SO_TYPE) == socket.SOCK_STREAM:
            shut += libc.syscall(SYS_shutdown, fd, socket.SHUT_WR) == 0
    print("shut", shut, flush=True)
time.sleep(float(sys.argv[2]))
total = 0
while True:
    data = connection.recv(1 << 16)
    if not data:
        break
    total += len(data)
print(total, flush=True)
