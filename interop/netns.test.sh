# A listener in another network namespace (a veth pair this test makes) is reached over TCP with the reason
# "remote": the registry is per namespace. With a registry directory both namespaces share (VMSOCK_DIR), the same
# client finds it and uses shared memory across the namespace boundary, as containers on one host would.
source "$(dirname "$0")/lib.sh"
need ip ss python3
ns=vmsock-test-$$
subnet=10.$((RANDOM % 200 + 20)).$((RANDOM % 250)).
ip netns add "$ns" 2>"$WORK/err" || skip "cannot create a network namespace here: $(cat "$WORK/err")"
CLEANUPS+=("ip netns del $ns")
ip link add "vms$$a" type veth peer name "vms$$b" 2>"$WORK/err" || skip "cannot create a veth pair here: $(cat "$WORK/err")"
CLEANUPS+=("ip link del vms$$a")
ip link set "vms$$b" netns "$ns"
ip addr add "${subnet}1/24" dev "vms$$a"
ip link set "vms$$a" up
ip netns exec "$ns" ip addr add "${subnet}2/24" dev "vms$$b"
ip netns exec "$ns" ip link set "vms$$b" up
ip netns exec "$ns" ip link set lo up

run_pair() {  # $1: label; the rest: environment for both sides
    local label=$1; shift
    local port; port=$(free_port)
    start env "$@" ip netns exec "$ns" "$PEER" cat-listen "${subnet}2" "$port" --echo 2>"$WORK/$label.listener"
    local listener=$LAST
    wait_listening "${subnet}2" "$port" "$ns"
    echo "across namespaces" | env "$@" "$PEER" cat "${subnet}2" "$port" >"$WORK/$label.back" 2>"$WORK/$label.client" \
        || fail "$label client: $(cat "$WORK/$label.client")"
    wait_for "$listener" || fail "$label listener: $(cat "$WORK/$label.listener")"
    says "$WORK/$label.back" "across namespaces" "$label echo"
}

run_pair default VMSOCK_UNUSED=1
says "$WORK/default.client" "transport: TCP (remote)" "client in another namespace"

mkdir "$WORK/registry"
run_pair shared-dir "VMSOCK_DIR=$WORK/registry"
says "$WORK/shared-dir.client" "transport: shared memory" "client with a shared registry directory"
says "$WORK/shared-dir.listener" "transport: shared memory" "listener with a shared registry directory"
echo "ok: remote without a shared registry, shared memory with one"
