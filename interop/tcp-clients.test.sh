# A vmsock listener serves real nc and socat clients over TCP, and a vmsock client talks to real nc and socat
# servers; 4 MiB of random bytes each way, checked by sha256.
source "$(dirname "$0")/lib.sh"
need nc socat ss python3
random_file "$WORK/up" $((4 << 20))
random_file "$WORK/down" $((4 << 20))

# Real clients, vmsock echo listener: what comes back is what went.
for client in nc socat; do
    port=$(free_port)
    start "$PEER" cat-listen 127.0.0.1 "$port" --echo 2>"$WORK/$client.listener"
    listener=$LAST
    wait_listening 127.0.0.1 "$port"
    case $client in
        nc) nc -N 127.0.0.1 "$port" <"$WORK/up" >"$WORK/$client.back" ;;
        socat) socat -t 30 - "TCP:127.0.0.1:$port" <"$WORK/up" >"$WORK/$client.back" ;;
    esac
    wait_for "$listener" || fail "vmsock listener failed serving $client: $(cat "$WORK/$client.listener")"
    same "$WORK/up" "$WORK/$client.back" "$client client through the vmsock echo listener"
    says "$WORK/$client.listener" "transport: TCP local 127.0.0.1:$port" "vmsock listener serving $client"
done

# vmsock client, real socat server: each side sends its file and half-closes; each must receive the other's.
port=$(free_port)
start socat -t 30 "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" - <"$WORK/down" >"$WORK/socat.got"
server=$LAST
wait_listening 127.0.0.1 "$port"
"$PEER" cat 127.0.0.1 "$port" <"$WORK/up" >"$WORK/socat.client-got" 2>"$WORK/socat.client" \
    || fail "vmsock client to socat: $(cat "$WORK/socat.client")"
wait_for "$server" || fail "socat server failed"
same "$WORK/up" "$WORK/socat.got" "vmsock client to socat server (upstream)"
same "$WORK/down" "$WORK/socat.client-got" "vmsock client to socat server (downstream)"
says "$WORK/socat.client" "transport: TCP (no shared-memory listener)" "vmsock client to socat"

# vmsock client, real nc -l server. nc quits as soon as the network side ends, so one direction at a time:
# upstream, nc only receives (-d); downstream, our client keeps its write side open until it has everything.
port=$(free_port)
start nc -d -l 127.0.0.1 "$port" >"$WORK/nc.got"
server=$LAST
wait_listening 127.0.0.1 "$port"
"$PEER" cat 127.0.0.1 "$port" <"$WORK/up" >/dev/null 2>"$WORK/nc.client" || fail "vmsock client to nc: $(cat "$WORK/nc.client")"
wait_for "$server" || fail "nc server failed"
same "$WORK/up" "$WORK/nc.got" "vmsock client to nc server (upstream)"
says "$WORK/nc.client" "transport: TCP (no shared-memory listener)" "vmsock client to nc"

port=$(free_port)
start nc -N -l 127.0.0.1 "$port" <"$WORK/down"
wait_listening 127.0.0.1 "$port"
touch "$WORK/nc.client-got"
size=$(stat -c %s "$WORK/down")
{ while [ "$(stat -c %s "$WORK/nc.client-got")" -lt "$size" ]; do sleep 0.05; done; } \
    | "$PEER" cat 127.0.0.1 "$port" >"$WORK/nc.client-got" 2>"$WORK/nc.client" || fail "vmsock client from nc: $(cat "$WORK/nc.client")"
same "$WORK/down" "$WORK/nc.client-got" "vmsock client to nc server (downstream)"
echo "ok: nc and socat, both directions, 4 MiB each way"
