#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test vmsock: libevent-dev (and pkg-config) from Debian.
# Idempotent and quiet when everything is there. Needs root for apt-get (CI and the dev machines run as root).
set -euo pipefail

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "setup: swift is not on PATH; use: export PATH=/opt/swift/usr/bin:\$PATH" >&2
    else
        echo "setup: no Swift toolchain found (expected /opt/swift); install Swift 6 first" >&2
    fi
    exit 1
fi

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libevent_pthreads 2>/dev/null || missing+=(libevent-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
