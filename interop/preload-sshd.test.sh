# OpenSSH's sshd under vmsock-run, driven by ssh under it: sshd re-execs itself for each connection with the
# accepted socket as its standard input and output (the exec hands the shared-memory connection to a relay,
# ferry.c), then forks its privilege-separated child. A command's output and 4 MiB through `cat` and back, checked
# by sha256; key authentication only, on a free port, with its own host key and configuration.
source "$(dirname "$0")/lib.sh"
need ssh ssh-keygen python3
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
[ -x "$SSHD" ] || skip "sshd is not installed (tools/setup.sh installs openssh-server)"
[ "$(id -u)" = 0 ] || skip "sshd needs root here (its privilege separation)"
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/user"
cp "$WORK/user.pub" "$WORK/authorized_keys"
port=$(free_port)
cat >"$WORK/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $WORK/host
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
CONFIG
start "$VMSOCK_RUN" --debug "$SSHD" -D -e -f "$WORK/sshd_config" 2>"$WORK/server.err"
server=$LAST
wait_listening 127.0.0.1 "$port"
client() {
    timeout 60 "$VMSOCK_RUN" --debug ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o LogLevel=ERROR -i "$WORK/user" -p "$port" root@127.0.0.1 "$@"
}
answer=$(client echo hello from sshd 2>"$WORK/client.err") || fail "ssh failed: $(cat "$WORK/client.err" "$WORK/server.err")"
[ "$answer" = "hello from sshd" ] || fail "ssh's command printed '$answer'"
random_file "$WORK/data" $((4 << 20))
client cat <"$WORK/data" >"$WORK/got" 2>>"$WORK/client.err" || fail "ssh cat failed: $(cat "$WORK/client.err")"
same "$WORK/data" "$WORK/got" "4 MiB through ssh and cat"
[ "$(grep -c "connect fd [0-9]* to 127.0.0.1:$port: shared memory" "$WORK/client.err")" -eq 2 ] \
    || fail "ssh did not connect over shared memory twice: $(cat "$WORK/client.err")"
[ "$(grep -c "accept fd [0-9]* from .*: shared memory" "$WORK/server.err")" -eq 2 ] \
    || fail "sshd did not accept over shared memory twice: $(cat "$WORK/server.err")"
[ "$(grep -c "goes to the new image as a TCP socket through a relay process" "$WORK/server.err")" -ge 2 ] \
    || fail "sshd's re-exec did not hand its connections to relays: $(cat "$WORK/server.err")"
kill "$server"
wait_for "$server" 10 || true
for _ in $(seq 50); do [ -z "$(live_relays)" ] && break; sleep 0.1; done
[ -z "$(live_relays)" ] || fail "a relay process is left: $(live_relays)"
echo "ok: sshd re-exec'd on shared-memory connections: a command and 4 MiB through cat, the relays gone"
