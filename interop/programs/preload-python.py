# Python's subprocess under vmsock-run, for interop/preload-exec.test.sh. subprocess starts its children with
# vfork, and the child moves descriptors with dup2 and closes every other one before exec.
#   keep PORT:         the server: per line from its one client, runs a subprocess that inherits nothing, then
#                      answers the line in upper case on the same connection.
#   keep-client PORT:  its client: three lines, each answer checked, then end of stream.
#   inetd PORT:        the server: runs cat with the accepted connection as its standard input and output.
import socket
import subprocess
import sys


def read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            sys.exit(f"end of stream after {data!r}")
        data += chunk
    return data


def serve(mode, port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4)
    conn, _ = listener.accept()
    if mode == "keep":
        for _ in range(3):
            line = read_line(conn)
            subprocess.run(["true"], check=True)
            conn.sendall(line.upper())
    else:
        subprocess.run(["cat"], stdin=conn, stdout=conn, check=True)
    conn.close()


def keep_client(port):
    conn = socket.create_connection(("127.0.0.1", port))
    for word in (b"one\n", b"two\n", b"three\n"):
        conn.sendall(word)
        answer = read_line(conn)
        if answer != word.upper():
            sys.exit(f"sent {word!r}, got {answer!r}")
    conn.shutdown(socket.SHUT_WR)
    if conn.recv(1) != b"":
        sys.exit("no end of stream")
    print("three answers after three subprocesses, then end of stream")


mode, port = sys.argv[1], int(sys.argv[2])
if mode == "keep-client":
    keep_client(port)
else:
    serve(mode, port)
