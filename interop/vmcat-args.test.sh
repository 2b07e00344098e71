# Bad command lines and failed connects: exit 1 with one line on stderr starting "vmcat:", never a stack trace.
source "$(dirname "$0")/lib.sh"
need python3
closed=$(free_port)
expect_error() {
    local text=$1; shift
    local status=0
    "$VMCAT" "$@" </dev/null >/dev/null 2>"$WORK/err" || status=$?
    [ "$status" = 1 ] || fail "vmcat $*: exit $status, expected 1 ($(cat "$WORK/err"))"
    [ "$(wc -l <"$WORK/err")" = 1 ] || fail "vmcat $*: expected one line, got: $(cat "$WORK/err")"
    says "$WORK/err" "^vmcat: .*$text" "vmcat $*"
}
expect_error "invalid option -- 'x'" -x 127.0.0.1 80
expect_error "unrecognized option '--frobnicate'" --frobnicate 127.0.0.1 80
expect_error "port number too large: 99999" 127.0.0.1 99999
expect_error "port number invalid: http" 127.0.0.1 http
expect_error "missing port number" 127.0.0.1
expect_error "missing port number" -l
expect_error "option requires an argument -- 'w'" 127.0.0.1 80 -w
expect_error "invalid transport" --transport udp 127.0.0.1 80
expect_error "invalid ring size" --ring-size 1000 127.0.0.1 80
expect_error "must use -l with -k" -k 127.0.0.1 80
expect_error "Connection refused" 127.0.0.1 "$closed"
expect_error "Connection refused" --transport shm 127.0.0.1 "$closed"
expect_error "does not resolve\|resolve\|Name or service" no-such-host.invalid 80
"$VMCAT" -h >"$WORK/help" || fail "-h: exit $?"
says "$WORK/help" "usage: vmcat" "-h"
echo "ok: argument errors and refused connects are one line and exit 1"
