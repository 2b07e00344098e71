# A TCP server that is slow to read, for the tests of a writer waiting for room: listens on 127.0.0.1:PORT, accepts
# one connection, prints "accepted", optionally shuts its writing side (half-close), reads nothing for SECONDS,
# then reads to end of stream and prints how many bytes came.
#   python3 slow-reader.py PORT SECONDS [half-close]
import socket, sys, time

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1)
connection, _ = listener.accept()
print("accepted", flush=True)
if sys.argv[3:] == ["half-close"]:
    connection.shutdown(socket.SHUT_WR)
time.sleep(float(sys.argv[2]))
total = 0
while True:
    data = connection.recv(1 << 16)
    if not data:
        break
    total += len(data)
print(total, flush=True)
