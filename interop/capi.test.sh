# The C API (issue 18): a C program, compiled against vmsock.h with the system's C compiler (and with clang when
# there is one) and linked against the built libvmsock.so, drives every call of the header over both transports,
# in one process and between two (interop/capi/capi_test.c says what it checks).
source "$(dirname "$0")/lib.sh"
export PATH="/opt/swift/usr/bin:$PATH"
need swift
# The library next to the other binaries: built (or found up to date) in the same scratch directory.
swift build --scratch-path "$(dirname "$BIN")" -c "$(basename "$BIN")" --product vmsock >"$WORK/build" 2>&1 \
    || fail "swift build --product vmsock: $(tail -20 "$WORK/build")"
[ -f "$BIN/libvmsock.so" ] || fail "no $BIN/libvmsock.so after the build"
LIBDIR=$(cd "$BIN" && pwd)
INCLUDE=Sources/CVMSockAPI/include

compilers=()
command -v cc >/dev/null && compilers+=(cc)
command -v clang >/dev/null && compilers+=(clang)
[ ${#compilers[@]} -gt 0 ] || skip "no C compiler (cc, or clang from the Swift toolchain)"
for compiler in "${compilers[@]}"; do
    # The header alone, strictly: C99 pedantic, and as C++ where the compiler driver has a C++ sibling.
    echo '#include <vmsock.h>' >"$WORK/header.c"
    "$compiler" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only -I "$INCLUDE" "$WORK/header.c" \
        || fail "$compiler: vmsock.h does not compile as strict C99"
    "$compiler" -x c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -I "$INCLUDE" "$WORK/header.c" 2>"$WORK/cxx" \
        || grep -q "not found\|unable to execute\|No such file" "$WORK/cxx" \
        || fail "$compiler: vmsock.h does not compile as C++: $(cat "$WORK/cxx")"
    "$compiler" -std=c11 -Wall -Wextra -Werror -I "$INCLUDE" interop/capi/capi_test.c \
        -L "$LIBDIR" -lvmsock -Wl,-rpath,"$LIBDIR" -lpthread -o "$WORK/capi_test-$compiler" \
        || fail "$compiler could not build interop/capi/capi_test.c"
    echo "built with $compiler"
done

# Every test, from the first compiler's build; the program forks and execs itself for the two-process tests.
timeout 120 "$WORK/capi_test-${compilers[0]}" >"$WORK/out" 2>&1 || fail "capi_test: $(cat "$WORK/out")"
cat "$WORK/out"
says "$WORK/out" "ok: every test passed" "capi_test"
# Through a vmsockd region: the same data calls, and vmsock_transport says VMSOCK_TRANSPORT_IVSHMEM.
[ -x "$BIN/vmsockd" ] || fail "$BIN/vmsockd is not built (swift build)"
start_vmsockd
VMSOCK_IVSHMEM=$SOCK timeout 120 "$WORK/capi_test-${compilers[0]}" ivshmem >"$WORK/out-ivshmem" 2>&1 \
    || fail "capi_test ivshmem: $(cat "$WORK/out-ivshmem")"
cat "$WORK/out-ivshmem"
says "$WORK/out-ivshmem" "ok: every ivshmem test passed" "capi_test ivshmem"
# The other compiler's build runs every test too.
if [ ${#compilers[@]} -gt 1 ]; then
    timeout 120 "$WORK/capi_test-${compilers[1]}" >"$WORK/out2" 2>&1 || fail "capi_test (${compilers[1]}): $(cat "$WORK/out2")"
fi
echo "ok: the C API, built with ${compilers[*]}"
