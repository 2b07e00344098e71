#!/usr/bin/env python3
"""Writes the seed corpus, Fuzz/corpus/<target>/<seed>: one well-formed input per case each target knows.

Each target reads its input as a little program (the comment at the top of Fuzz/<target>.swift says how); the
seeds here are the well-formed runs, from which libFuzzer mutates. Rerun after changing a target's input format:
    python3 Fuzz/make-corpus.py
"""
import json, os, shutil, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def message(kind, capacity=0, reason=0, family=0, port=0, address=b"", flags=0, source=0, source_address=b"",
            version=8):
    """A handshake message (Sources/VMSock/Control/HandshakeMessage.swift): 64 bytes."""
    return struct.pack("<IHHIIHH16sIH6s16s", 0x48534D56, version, kind, capacity, reason, family, port,
                       address.ljust(16, b"\0"), flags, source, b"", source_address.ljust(16, b"\0"))


HELLO, WELCOME, REJECT, REOPEN = 1, 2, 3, 4
LOOPBACK = bytes([127, 0, 0, 1])
RING_MEMFD = bytes([0, 0, 0, 0x17, 0])  # kind 0, the announced size, no size change, grow|shrink|future-write|seal
BELL = bytes([2])                        # the ringing end of a Unix stream socketpair
seeds = {
    "handshake-message": {
        "hello-v4": b"\0" + message(HELLO, 262144, family=4, port=7000, address=LOOPBACK, flags=3, source=40000,
                                    source_address=LOOPBACK),
        "hello-v6": b"\0" + message(HELLO, 4096, family=6, port=7000, address=bytes(15) + b"\1", flags=1, source=40002,
                                    source_address=bytes(15) + b"\1"),
        "hello-no-address": b"\0" + message(HELLO, 65536),
        "welcome": b"\0" + message(WELCOME, 262144, flags=2),
        "reject": b"\0" + message(REJECT, reason=1),
        "reopen": b"\0" + message(REOPEN, 262144, family=4, port=7000, address=LOOPBACK, source=40001,
                                  source_address=LOOPBACK),
        "truncated-hello": b"\x80" + message(HELLO, 4096),
    },
    # step, length choice (0: 64 bytes), message, descriptor count, descriptors, our ring size choice, reuse flag
    "handshake-peer": {
        "hello": bytes([0, 0]) + message(HELLO, 4096, family=4, port=7000, address=LOOPBACK, flags=2)
        + bytes([3]) + RING_MEMFD + BELL + BELL + bytes([0, 1]),
        "welcome": bytes([1, 0]) + message(WELCOME, 8192, flags=2) + bytes([3]) + RING_MEMFD + BELL + BELL + bytes([0, 1]),
        "reject": bytes([1, 0]) + message(REJECT, reason=2) + bytes([0, 0, 0]),
        # ... then the connector's generation: 1 (the link's next)
        "reopen": bytes([2, 0]) + message(REOPEN, 4096, family=4, port=7000, address=LOOPBACK) + bytes([0, 0, 1]),
        # ... then the listener's header: producer 0, consumer 0 (all read), shutdown word parked|closed, generation 0
        "reopen-connector": bytes([3, 0]) + message(REOPEN, 4096) + bytes([0, 0, 1, 1, 0x0C, 0]),
    },
    # capacity, mirrored, start, producer offset (2), then steps (see Fuzz/ring.swift)
    "ring": {
        "stream": bytes([0, 1, 0, 0, 0])
        + bytes([0]) + struct.pack("<i", 3000) + bytes([3]) + bytes([5]) + struct.pack("<H", 1000) + bytes([10])
        + bytes([6, 200]) + bytes([7]) + struct.pack("<H", 2000) + bytes([1, 0x41])
        + bytes([1]) + struct.pack("<i", 1500) + bytes([4]) + bytes([7]) + struct.pack("<H", 4000) + bytes([0]),
        "wrap": bytes([1, 0, 3, 0xFF, 0x0F])
        + bytes([0]) + struct.pack("<i", 8000) + bytes([3, 5]) + struct.pack("<H", 7000) + bytes([0])
        + bytes([7]) + struct.pack("<H", 9000) + bytes([1, 0x42]) + bytes([1]) + struct.pack("<i", 100) + bytes([4]),
        "header": bytes([2, 1, 0, 0, 0, 8, 16, 0, 8, 17, 0x40, 8, 0, 0x76]),
    },
    # size exponent, exact, header written (not 0xFF), vectors, instance (8), patches, slot reads (id 4, word 8)
    "ivshmem-header": {
        "64k": bytes([16, 1, 0, 1]) + bytes(8) + bytes([0, 2]) + struct.pack("<IQ", 3, 7) + struct.pack("<IQ", 63, 1),
        "64m": bytes([26, 1, 0, 64]) + bytes(8) + bytes([0, 1]) + struct.pack("<IQ", 65535, 5),
        "64g": bytes([36, 1, 0, 2]) + bytes(8) + bytes([1, 24, 0]),
    },
    # a default join (version, id, region: 64 KiB, sealed, 1 vector, slots 0 and 1 live), then messages
    "ivshmem-client": {
        "join": bytes([0, 0]) + bytes([0, 0, 1, 0, 3, 0]) + bytes([0, 1, 2, 1]) + bytes([0, 0, 2, 1]) + bytes([0, 1, 0, 0]),
        "join-alone": bytes([0, 0]) + bytes([0, 0, 1, 0, 1, 0]) + bytes([0, 0, 2, 1, 0]),
        "raw-version": bytes([0xC0]) + bytes([4]) + bytes([0]) + bytes([3, 0]) + bytes([0]),
    },
    # family (1: IPv4), address, port, no directory (1) or a directory (0, length, name), local, names too
    "registry": {
        "loopback": bytes([1]) + LOOPBACK + struct.pack("<H", 7000) + bytes([1, 1, 1]),
        "directory": bytes([1, 10, 0, 0, 5]) + struct.pack("<H", 80) + bytes([0, 11]) + b"/tmp/vmsock" + bytes([0, 1]),
        "v6-wildcard": bytes([0]) + bytes(16) + struct.pack("<H", 443) + bytes([1, 1, 1]),
    },
}


def control(body):
    data = json.dumps(body).encode()
    return struct.pack(">I", len(data)) + data


greeting = b"vmperf\0\1" + struct.pack("<II", 1, 3) + b"abcdefghijklmnopqrstuvwxyz234567"
parameters = {"mode": "throughput", "streams": 2, "blockSize": 131072, "duration": 10.0, "bytes": 0, "blocks": 0,
              "reverse": False, "bidir": False, "interval": 1.0, "spinUs": 50, "ringSize": 4194304}
waits = {"readSleeps": 3, "writeSleeps": 1, "dataRings": 2, "spaceRings": 4}
results = {"cpu": {"user": 1.5, "system": 2.0, "steal": 0.0},
           "streams": [{"index": 0, "sender": False, "bytes": 1 << 30, "seconds": 10.0, "waits": waits},
                       {"index": 1, "sender": True, "bytes": 1 << 20, "seconds": 10.0, "retransmits": 0}]}
seeds["vmperf-wire"] = {
    "greeting": b"\0" + greeting,
    "parameters": b"\1" + control(parameters),
    "parameters-latency": b"\1" + control(dict(parameters, mode="latency", blockSize=64, serverCPU=1)),
    "parameters-paced": b"\1" + control(dict(parameters, omit=2, bitsPerSecond=10**9, burst=10, title="t",
                                              extraData="x", getServerOutput=True)),
    "reply": b"\2" + control({"error": "busy"}),
    "server-output": b"\3" + control({"text": "Accepted connection from 127.0.0.1\n\x1b[2J", "isJSON": False}),
    "server-output-json": b"\3" + control({"text": json.dumps({"start": {}, "intervals": [], "end": {}}), "isJSON": True}),
    "results": b"\4" + bytes([2, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]) + control(results),
}
argv = lambda *words: b"\0".join(w.encode() for w in words)
seeds["vmcat-options"] = {
    "listen": argv("-l", "7000"),
    "listen-keep": argv("-lk", "-p", "7000"),
    "connect": argv("-N", "-w5", "-q", "1", "127.0.0.1", "7000"),
    "long-options": argv("--transport", "shm", "--ring-size=65536", "-v", "host", "1"),
    "flags": argv("-46dlNvz", "--", "7000"),
    "help": argv("-h"),
}
seeds["vmperf-options"] = {
    "server": argv("-s", "-1", "-p", "5202"),
    "client": argv("-c", "127.0.0.1", "-t", "1", "-P4", "-l128K", "-i", "0.5", "-f", "M"),
    "client-bidir": argv("-c", "h", "--transport", "unix", "-J", "--bidir", "-w", "1M", "--spin-us", "0"),
    "latency": argv("-c", "h", "--latency", "-A", "0,1", "-n", "10M", "-V"),
    "compare": argv("--compare", "--svg", "x.svg"),
    "paper": argv("--paper", "--runs", "3", "--iterations", "1000"),
    "connections": argv("--connections", "100", "--transport", "shm"),
    "help": argv("--help"),
    "paced": argv("-c", "h", "-b", "1G/10", "-O", "2", "-T", "t", "--timestamps", "--extra-data", "x", "--get-server-output"),
    "daemon": argv("-s", "-D", "-I", "/tmp/p", "--rcv-timeout", "500"),
    "unsupported": argv("-c", "h", "-u", "-Z", "--dscp=3"),
}

for target, files in seeds.items():
    directory = os.path.join(root, target)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
print(f"make-corpus: {sum(len(f) for f in seeds.values())} seeds for {len(seeds)} targets in {root}")
