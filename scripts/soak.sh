#!/usr/bin/env bash
# Soak: many slaves, steady TCP between two of them, slaves coming and going, for a set
# time; then checks that nothing leaked. Not part of CI (it runs for minutes).
#
#   sudo scripts/soak.sh [SECONDS] [SLAVES] [BACKEND]     defaults: 300 100 kernel
#
# Everything happens in scratch namespaces named soak<pid>-*; they are deleted on exit.
# Reports: the daemon's fds, threads and resident memory before and after the churn,
# host ends left in the master's namespace, and the TCP bytes sent and received.
set -euo pipefail

DURATION=${1:-300}
N=${2:-100}
BACKEND=${3:-kernel}
[ "$(id -u)" -eq 0 ] || { echo "soak: needs root (namespaces and devices)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "soak: needs python3 for its TCP byte counter" >&2; exit 1; }

cd "$(dirname "$(readlink -f "$0")")/.."
cargo build --release -q -p ipvlan
BIN=$PWD/target/release/ipvlan
P=soak$$
TMP=$(mktemp -d)
export IPVLAN_SOCKET=$TMP/ipvlan.sock IPVLAN_NO_AUTOSTART=1
DAEMON=

cleanup() {
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$P-host"
ip netns add "$P-router"
ip -n "$P-host" link add eth0 type veth peer name eth0 netns "$P-router"
ip -n "$P-host" link set eth0 up
ip -n "$P-router" link set eth0 up
ip -n "$P-router" addr add 10.250.0.1/16 dev eth0

"$BIN" daemon --socket "$IPVLAN_SOCKET" --backend "$BACKEND" 2>"$TMP/daemon.log" &
DAEMON=$!
for _ in $(seq 50); do [ -S "$IPVLAN_SOCKET" ] && break; sleep 0.1; done

slave_up() { # i
    local i=$1 ns="$P-s$1"
    ip netns add "$ns" 2>/dev/null || true
    "$BIN" -n "$P-host" link add link eth0 "sl$i" type ipvlan mode l2
    ip -n "$P-host" link set "sl$i" netns "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "sl$i" up
    ip -n "$ns" addr add "10.250.$((i / 200 + 1)).$((i % 200 + 10))/16" dev "sl$i"
}
slave_down() { # i
    "$BIN" -n "$P-s$1" link del "sl$1"
}

for i in $(seq 0 $((N - 1))); do slave_up "$i"; done
sleep 1

stat_daemon() {
    printf '%s fds, %s threads, %s kB resident' \
        "$(ls /proc/"$DAEMON"/fd | wc -l)" "$(ls /proc/"$DAEMON"/task | wc -l)" \
        "$(awk '/VmRSS/ {print $2}' /proc/"$DAEMON"/status)"
}
before=$(stat_daemon)
ends_before=$(ip -n "$P-host" -o link | grep -c ' ivh' || true)
echo "soak: $N slaves ($BACKEND backend), ${DURATION}s; daemon at start: $before; host ends: $ends_before"

# Steady TCP in fixed-size transfers, every byte counted by the receiver: slave 0 to
# slave 1, and slave 2 to the router, until the time is up. (iperf3's own byte counts
# stop before the last bytes in flight arrive, so they cannot show loss.)
RECV='import socket,sys
s=socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(1); c,_=s.accept(); n=0
while True:
    b=c.recv(1<<20)
    if not b: break
    n+=len(b)
print(n)'
SEND='import socket,sys,time
n=int(sys.argv[3]); buf=bytes(1<<20)
for _ in range(50):
    try:
        c=socket.create_connection((sys.argv[1],int(sys.argv[2]))); break
    except OSError: time.sleep(0.1)
left=n
while left: left-=c.send(buf[:min(left,len(buf))])
c.shutdown(socket.SHUT_WR); c.recv(1); print(n)'
tcp_loop() { # from-ns to-ns addr port out
    local n=0
    while [ $SECONDS -lt "$end" ]; do
        ip netns exec "$2" python3 -c "$RECV" "$3" "$4" >"$5.recv.$n" &
        local srv=$!
        ip netns exec "$1" python3 -c "$SEND" "$3" "$4" $((1 << 30)) >"$5.sent.$n" || true
        wait "$srv" || true
        n=$((n + 1))
    done
}
end=$((SECONDS + DURATION))
tcp_loop "$P-s0" "$P-s1" 10.250.1.11 5201 "$TMP/s2s" &
T1=$!
tcp_loop "$P-s2" "$P-router" 10.250.0.1 5202 "$TMP/s2x" &
T2=$!

# Churn: slaves 10.. come and go; each new one must reach the router (the first ARP
# reply can come before the daemon has learned the address: up to 3 tries).
churned=0
pings_failed=0
while [ $SECONDS -lt $end ]; do
    i=$((10 + RANDOM % (N - 10)))
    slave_down "$i"
    slave_up "$i"
    churned=$((churned + 1))
    ip netns exec "$P-s$i" ping -c 3 -i 0.5 -w 4 10.250.0.1 2>/dev/null | grep -q ' 0% packet loss\| [12] received' \
        || { pings_failed=$((pings_failed + 1)); echo "soak: no reply from the router to sl$i"; }
done
wait "$T1" "$T2"
sleep 2

after=$(stat_daemon)
ends_after=$(ip -n "$P-host" -o link | grep -c ' ivh' || true)
bytes() { # prefix: total sent and received over every transfer
    local sent=0 recv=0 runs=0 f
    for f in "$1".sent.*; do
        [ -s "$f" ] || continue
        sent=$((sent + $(cat "$f")))
        recv=$((recv + $(cat "${f/.sent./.recv.}" 2>/dev/null || echo 0)))
        runs=$((runs + 1))
    done
    echo "$sent $recv $runs"
}
read -r s1 r1 n1 < <(bytes "$TMP/s2s")
read -r s2 r2 n2 < <(bytes "$TMP/s2x")
echo "soak: slaves recreated: $churned, of which $pings_failed never reached the router"
echo "soak: daemon at end:   $after; host ends: $ends_after"
echo "soak: TCP slave->slave:    $n1 transfers, sent $s1 bytes, received $r1 (lost $((s1 - r1)))"
echo "soak: TCP slave->external: $n2 transfers, sent $s2 bytes, received $r2 (lost $((s2 - r2)))"
[ "$ends_before" -eq "$ends_after" ] || { echo "soak: host ends leaked" >&2; exit 1; }
[ "$s1" -eq "$r1" ] && [ "$s2" -eq "$r2" ] || { echo "soak: TCP bytes lost" >&2; exit 1; }
[ "$pings_failed" -eq 0 ] || { echo "soak: some new slaves never reached the router" >&2; exit 1; }
echo "soak: ok"
