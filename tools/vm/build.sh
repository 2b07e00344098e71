#!/usr/bin/env bash
# Builds a test guest from Debian packages only, and prints the two paths to boot it: "KERNEL INITRD".
#   tools/vm/build.sh [BIN]      BIN: the build directory whose binaries go in (default .build/debug)
# VMSOCK_VM_BINARIES: which (default "vmcat"; vmperf and vmsock-testpeer bring Foundation and ICU, 60 MB more, which
# under TCG adds seconds to every boot).
# The kernel is the package linux-image-amd64 depends on (apt-get download + dpkg -x, nothing installed), with the
# modules a guest needs (e1000 for user networking, the vfio chain for interrupts); the shell is busybox-static.
# The binaries go in with every library ldd lists (the Swift runtime from /opt/swift, libevent), at the same paths.
# Everything is cached under $VMSOCK_VM_CACHE (default ~/.cache/vmsock-vm): the kernel and the base initrd once,
# the binaries' part again only when they change. Exit 77 with the reason when a package cannot be had.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-.build/debug}
CACHE=${VMSOCK_VM_CACHE:-$HOME/.cache/vmsock-vm}
mkdir -p "$CACHE"
cannot() { echo "SKIP: $*" >&2; exit 77; }
for tool in apt-get apt-cache dpkg gzip ldd; do command -v "$tool" >/dev/null || cannot "$tool is not installed"; done
BINARIES=${VMSOCK_VM_BINARIES:-vmcat}
for binary in $BINARIES; do [ -x "$BIN/$binary" ] || cannot "$BIN/$binary is not built"; done

# The kernel package and busybox, unpacked once.
if [ ! -s "$CACHE/base/ready" ]; then
    rm -rf "$CACHE/base" "$CACHE/debs"
    mkdir -p "$CACHE/debs" "$CACHE/base"
    kernel=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
    [ -n "$kernel" ] || cannot "apt-cache knows no package linux-image-amd64 depends on (apt-get update?)"
    (cd "$CACHE/debs" && apt-get download "$kernel" busybox-static >/dev/null 2>&1) \
        || cannot "apt-get download $kernel busybox-static failed"
    dpkg -x "$CACHE"/debs/linux-image-*.deb "$CACHE/base/kernel"
    dpkg -x "$CACHE"/debs/busybox-static_*.deb "$CACHE/base/busybox"
    rm -rf "$CACHE/debs"
    cp "$CACHE"/base/kernel/boot/vmlinuz-* "$CACHE/vmlinuz"
    modules=$(echo "$CACHE"/base/kernel/lib/modules/*/kernel)
    root=$CACHE/base/root
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,lib64,etc}
    cp "$CACHE/base/busybox/bin/busybox" "$root/bin/busybox"
    # Loaded in this order by /init (busybox insmod resolves no dependencies).
    for module in drivers/net/ethernet/intel/e1000/e1000.ko virt/lib/irqbypass.ko drivers/vfio/vfio.ko \
        drivers/vfio/vfio_iommu_type1.ko drivers/vfio/vfio_virqfd.ko drivers/vfio/pci/vfio-pci-core.ko \
        drivers/vfio/pci/vfio-pci.ko; do
        [ -f "$modules/$module" ] || cannot "the kernel package has no $module"
        cp "$modules/$module" "$root/lib/modules/"
    done
    cp tools/vm/init "$root/init"
    chmod +x "$root/init"
    (cd "$root" && find . | "$CACHE/base/busybox/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$CACHE/base.cpio.gz")
    rm -rf "$CACHE/base/kernel"
    echo ok > "$CACHE/base/ready"
fi
# /init changes more often than the kernel: the base archive is rebuilt when it does, and with it every initrd
# (they are named after the binaries only, and would keep the old /init).
if ! cmp -s tools/vm/init "$CACHE/base/root/init"; then
    cp tools/vm/init "$CACHE/base/root/init"
    (cd "$CACHE/base/root" && find . | "$CACHE/base/busybox/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$CACHE/base.cpio.gz")
    rm -f "$CACHE"/initrd-*
fi

# The binaries and their libraries: a second archive, which the kernel unpacks over the first.
# Not compressed: under TCG the kernel copies an archive faster than it inflates one.
key=$( (echo "$BINARIES"; for binary in $BINARIES; do cat "$BIN/$binary"; done) | md5sum | cut -c1-16)
if [ ! -s "$CACHE/bin-$key.cpio" ]; then
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/bin"
    for binary in $BINARIES; do
        cp "$BIN/$binary" "$stage/bin/"
        strip --strip-debug "$stage/bin/$binary" 2>/dev/null || true
        ldd "$BIN/$binary" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'
    done | sort -u | while read -r library; do
        mkdir -p "$stage$(dirname "$library")"
        cp -L "$library" "$stage$library"
    done

    find "$stage" -name '*.so*' -exec strip --strip-debug {} \; 2>/dev/null || true
    rm -f "$CACHE"/bin-*.cpio "$CACHE"/initrd-*
    (cd "$stage" && find . | "$CACHE/base/busybox/bin/busybox" cpio -o -H newc 2>/dev/null > "$CACHE/bin-$key.cpio.tmp")
    mv "$CACHE/bin-$key.cpio.tmp" "$CACHE/bin-$key.cpio"
fi
# Several tests may build at once: each key has its own initrd, written whole before it is renamed into place.
if [ ! -s "$CACHE/initrd-$key" ]; then
    # The kernel finds an uncompressed archive after a compressed one only at a 4-byte boundary: pad with zeros.
    size=$(stat -c %s "$CACHE/base.cpio.gz")
    { cat "$CACHE/base.cpio.gz"; head -c $(( (512 - size % 512) % 512 )) /dev/zero; cat "$CACHE/bin-$key.cpio"; } \
        > "$CACHE/initrd-$key.tmp.$$"
    mv "$CACHE/initrd-$key.tmp.$$" "$CACHE/initrd-$key"
fi
echo "$CACHE/vmlinuz $CACHE/initrd-$key"
