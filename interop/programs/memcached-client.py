#!/usr/bin/env python3
"""A memcached client for interop/preload-memcached.test.sh: OPS random sets and gets of values from 1 B to 900 KB
over 20 connections, every answer checked against what it stored, then 50 pipelined gets on one connection.
Usage: memcached-client.py PORT OPS KEY-PREFIX [SEED]. Prints one line and exits 0, or says what differed (and the
random seed, which replays the same operations) and exits 1."""
import random
import socket
import sys

port, ops, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
seed = int(sys.argv[4]) if len(sys.argv) > 4 else random.randrange(1 << 32)
random.seed(seed)
connections = []
for _ in range(20):
    s = socket.create_connection(("127.0.0.1", port))
    connections.append((s, s.makefile("rb")))
stored = {}


def fail(text):
    print("memcached-client (seed %d): %s" % (seed, text))
    sys.exit(1)


def value_of(reader, key):
    """Reads one get's answer: the value, or None for a miss."""
    line = reader.readline()
    if line == b"END\r\n":
        return None
    parts = line.split()
    if len(parts) != 4 or parts[0] != b"VALUE" or parts[1] != key:
        fail("get %r: answer %r" % (key, line[:80]))
    value = reader.read(int(parts[3]))
    if reader.read(2) != b"\r\n" or reader.readline() != b"END\r\n":
        fail("get %r: the value's end is wrong" % key)
    return value


for i in range(ops):
    s, reader = random.choice(connections)
    key = prefix + b"%d" % random.randrange(200)
    if random.random() < 0.5:
        value = random.randbytes(random.choice([1, 100, 5000, 100000, 900000]))
        s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        answer = reader.readline()
        if answer != b"STORED\r\n":
            fail("set %r (%d B): answer %r" % (key, len(value), answer[:80]))
        stored[key] = value
    else:
        s.sendall(b"get %s\r\n" % key)
        if value_of(reader, key) != stored.get(key):
            fail("get %r after %d operations: not the value stored" % (key, i))
s, reader = connections[0]
keys = list(stored)[:50]
s.sendall(b"".join(b"get %s\r\n" % k for k in keys))
for key in keys:
    if value_of(reader, key) != stored[key]:
        fail("pipelined get %r: not the value stored" % key)
for s, reader in connections:
    s.close()
print("memcached-client: %d operations and %d pipelined gets, every answer right" % (ops, len(keys)))
