# Interactive use: vmcat's stdin is a terminal (a pseudo-terminal made by script(1)); each line reaches the
# listener as it is typed, long before end of file, over shared memory and over TCP.
source "$(dirname "$0")/lib.sh"
need script ss python3
for transport in auto tcp; do
    port=$(free_port)
    start "$VMCAT" -l 127.0.0.1 "$port" </dev/null >"$WORK/got.$transport"
    wait_listening 127.0.0.1 "$port"
    mkfifo "$WORK/keys.$transport"
    exec 3<>"$WORK/keys.$transport"  # read-write: opening it does not wait for the other end
    start script -q -e -c "$VMCAT --transport $transport 127.0.0.1 $port" /dev/null <"$WORK/keys.$transport" >/dev/null
    sleep 0.3
    echo "first line" >&3
    wait_contains "$WORK/got.$transport" 2 "first line"
    grep -q "second" "$WORK/got.$transport" && fail "saw a line that was not typed yet"
    echo "second line" >&3
    wait_contains "$WORK/got.$transport" 2 "second line"
    exec 3>&-
done
echo "ok: lines arrive as typed under a pseudo-terminal"
