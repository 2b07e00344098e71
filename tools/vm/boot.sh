#!/usr/bin/env bash
# Boots the test guest (tools/vm/build.sh), runs a script in it, and powers it off.
#   tools/vm/boot.sh [options] SCRIPT
#     --socket PATH    vmsockd's socket: the guest gets an ivshmem-doorbell device on it (else none)
#     --vectors N      the device's vectors (vmsockd's --vectors; default 1)
#     --vfio           a virtual IOMMU (intel-iommu) and the device bound to vfio-pci: interrupts, not polling
#     --bin DIR        the build whose binaries the guest holds (default .build/debug)
#     --pidfile FILE   where QEMU writes its pid (for tests that kill it)
#     --timeout S      QEMU is killed after S seconds (default 120)
#     --ip A.B.C.D     the guest's address on QEMU user networking (default 10.0.2.15): guests on one vmsockd
#                      find each other's listeners by address, so each needs its own
#     --add FILE       also put FILE in the guest's /bin (repeatable): a static binary, or one whose libraries
#                      the guest already has
#     --reboot         a `reboot -f` in the guest restarts it in the same QEMU (same ivshmem device, same peer id
#                      at vmsockd), and /init runs the script again; without it QEMU exits on a reboot. The
#                      script must find out itself which boot it is in (the guest keeps nothing across one), e.g.
#                      by asking the host: `nc 10.0.2.2 PORT` with busybox, answered by a listener on the host's
#                      127.0.0.1:PORT. A kernel panic then reboots too, until --timeout.
# SCRIPT runs as /run.sh under busybox sh, as root, with vmcat in /bin (and what VMSOCK_VM_BINARIES adds, see
# build.sh); the guest reaches the host at 10.0.2.2 (QEMU user networking, e1000; each QEMU has its own, so two
# guests reach each other only through the host or vmsockd's region). The console (the script's output among the
# kernel's, with the serial line's \r\n endings) goes to stdout as it comes.
# Exit status: the script's; 77 when no guest can be booted here (the reason on stderr); 124 when the guest did
# not finish in time.
# VMSOCK_VM_ACCEL: tcg (default; KVM guests hang on the machines this was written on) or kvm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
socket="" vectors=1 vfio=0 bin=.build/debug pidfile="" limit=120 ip=10.0.2.15 reboot=0 added=()
while [ $# -gt 1 ]; do
    case $1 in
        --socket) socket=$2; shift 2 ;;
        --vectors) vectors=$2; shift 2 ;;
        --vfio) vfio=1; shift ;;
        --bin) bin=$2; shift 2 ;;
        --pidfile) pidfile=$2; shift 2 ;;
        --timeout) limit=$2; shift 2 ;;
        --ip) ip=$2; shift 2 ;;
        --reboot) reboot=1; shift ;;
        --add) added+=("$2"); shift 2 ;;
        *) echo "boot.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# = 1 ] || { echo "usage: boot.sh [--socket PATH] [--vectors N] [--vfio] [--bin DIR] [--pidfile FILE]" \
    "[--timeout S] [--ip A.B.C.D] [--reboot] [--add FILE]... SCRIPT" >&2; exit 2; }
script=$1
# QEMU's user network is 10.0.2.0/24; .2 is the host, .3 its DNS server.
[[ $ip =~ ^10\.0\.2\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 4 ] && [ "${BASH_REMATCH[1]}" -le 254 ] \
    || { echo "boot.sh: --ip $ip is not an address of QEMU's user network (10.0.2.4 to 10.0.2.254)" >&2; exit 2; }
for file in "${added[@]}"; do [ -f "$file" ] || { echo "boot.sh: --add $file: no such file" >&2; exit 2; }; done
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 is not installed" >&2; exit 77; }
read -r kernel base < <("$here/build.sh" "$bin") || exit 77
cache=$(dirname "$base")
cpio_busybox=$cache/base/busybox/bin/busybox

# The script and the added files go in a third archive, unpacked last (the kernel takes concatenated archives).
# Not in build.sh's cache: it keeps one binaries archive (24 MB), which tests adding different files would
# rebuild each in turn.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"
cp "$script" "$work/root/run.sh"
for file in "${added[@]}"; do install -m 755 "$file" "$work/root/bin/"; done
(cd "$work/root" && find . | "$cpio_busybox" cpio -o -H newc 2>/dev/null > "$work/run.cpio")
cat "$base" "$work/run.cpio" > "$work/initrd"  # $base ends at a 512-byte boundary (build.sh)

accel=${VMSOCK_VM_ACCEL:-tcg}
append="console=ttyS0 quiet panic=-1 vmsock.ip=$ip"
machine=(-machine q35)
device=()
if [ -n "$socket" ]; then
    device=(-chardev "socket,path=$socket,id=ivs" -device "ivshmem-doorbell,chardev=ivs,vectors=$vectors")
fi
if [ "$vfio" = 1 ]; then
    # VFIO needs an IOMMU in the guest: the emulated Intel one (caching mode so that vfio's mappings are seen).
    machine=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on)
    append="$append intel_iommu=on vmsock.vfio=1"
fi
# -no-reboot turns the guest's reboot (and a panic: panic=-1) into QEMU's exit.
noreboot=$([ "$reboot" = 1 ] || echo -no-reboot)
status=0
timeout -s KILL "$limit" qemu-system-x86_64 -accel "$accel" "${machine[@]}" -m 512 -smp 1 -nographic $noreboot \
    -kernel "$kernel" -initrd "$work/initrd" -append "$append" \
    -netdev user,id=n0 -device e1000,netdev=n0,romfile= "${device[@]}" \
    ${pidfile:+-pidfile "$pidfile"} </dev/null | tee "$work/console" || status=$?  # live: tee does not buffer
[ "$status" = 137 ] && { echo "boot.sh: the guest did not finish within $limit s" >&2; exit 124; }
result=$(tr -d '\r' < "$work/console" | sed -n 's/^vmsock-guest: exit \([0-9]*\)$/\1/p' | tail -1)
if [ -z "$result" ]; then
    grep -q "vmsock-guest: up" "$work/console" || { echo "SKIP: the guest did not boot (QEMU exit $status)" >&2; exit 77; }
    echo "boot.sh: the guest's script did not finish (QEMU exit $status)" >&2
    exit 1
fi
exit "$result"
