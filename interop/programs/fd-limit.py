# Both ends of interop/preload-fd-limit.test.sh.
# server PORT GO N: listens, takes every descriptor left, says "full", and holds them until the file GO appears;
#   then frees them, accepts the N clients that connected meanwhile and echoes one line to each.
# client PORT GO N: connects N times (while the server is full), makes GO, then sends a line on each connection
#   and prints the echo.
import os, socket, sys, time

role, port, go, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if role == "server":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    fillers = []
    while True:
        try:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            break
    print("full", flush=True)
    while not os.path.exists(go):
        time.sleep(0.05)
    for fd in fillers:
        os.close(fd)
    for _ in range(count):
        connection, _ = listener.accept()
        connection.sendall(connection.makefile("rb").readline())
        connection.close()
    print("served", count, flush=True)
else:
    connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    open(go, "w").close()
    for i, connection in enumerate(connections):
        connection.sendall(b"line %d\n" % i)
        print(connection.makefile("rb").readline().decode().strip(), flush=True)
