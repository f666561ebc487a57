#!/usr/bin/env bash
# The whole point of leasekeeper in ~15 seconds: two replicas (pod-a, pod-b), each an agent plus
# a small app. pod-a leads; Kubernetes deletes pod-a (preStop runs `leasekeeper drain`); pod-a's
# app steps down and ACKs, the agent releases the lock, and pod-b's agent, told by the release
# notice (Redis pub/sub, or an etcd watch), takes over within milliseconds with a higher fencing
# token -- although its retry_interval is 10s and the lock's ttl is 10s.
#
# BACKEND=redis (default) or BACKEND=etcd.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LK=${LK_BIN:-$ROOT/build/leasekeeper}
APP=${LK_APP:-$ROOT/build/examples/app}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/leasekeeper-demo.XXXXXX")
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

# Wait up to $3 seconds (default 10) for a pattern to show up in a file.
wait_for() {
	for _ in $(seq $((${3:-10} * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	die "timed out waiting for '$2' in $1"
}

[ -x "$LK" ] || die "$LK not built (run make)"
[ -x "$APP" ] || die "$APP not built (run make)"

BACKEND=${BACKEND:-redis}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
case "$BACKEND" in
redis)
	say "Starting a private redis-server on 127.0.0.1:$PORT"
	redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
		>"$TMP/redis.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
	redis-cli -p "$PORT" ping >/dev/null || die "redis-server did not start"
	BACKEND_YAML="    type: redis
    address: \"127.0.0.1:$PORT\""
	show_key() { echo "redis: leasekeeper/scheduler = $(redis-cli -p "$PORT" get leasekeeper/scheduler)"; }
	;;
etcd)
	command -v etcd >/dev/null || die "etcd not installed (apt-get install etcd-server etcd-client)"
	PEER=$(free_port)
	say "Starting a private etcd on 127.0.0.1:$PORT"
	etcd --name demo --data-dir "$TMP/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
		--advertise-client-urls "http://127.0.0.1:$PORT" --listen-peer-urls "http://127.0.0.1:$PEER" \
		--initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
		--initial-cluster "demo=http://127.0.0.1:$PEER" >"$TMP/etcd.log" 2>&1 &
	PIDS+=($!)
	export ETCDCTL_API=3
	for _ in $(seq 100); do etcdctl --endpoints "127.0.0.1:$PORT" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
	etcdctl --endpoints "127.0.0.1:$PORT" endpoint health >/dev/null 2>&1 || die "etcd did not start"
	BACKEND_YAML="    type: etcd
    endpoints: [\"http://127.0.0.1:$PORT\"]"
	show_key() {
		echo "etcd: leasekeeper/scheduler = $(etcdctl --endpoints "127.0.0.1:$PORT" get leasekeeper/scheduler --print-value-only)" \
		     "(create_revision $(etcdctl --endpoints "127.0.0.1:$PORT" get leasekeeper/scheduler -w fields | sed -n 's/^"CreateRevision" : //p'))"
	}
	;;
*) die "BACKEND must be redis or etcd" ;;
esac

config() { # identity
	cat <<EOF
identity: $1
socket: $TMP/$1.sock
http_listen: ""             # two agents on one machine: no metrics port for the demo
log_format: text
shutdown_timeout: 10s
backends:
  - name: main
$BACKEND_YAML
locks:
  - name: scheduler
    backend: main
    ttl: 10s
    retry_interval: 10s     # the handoff below does not wait for this: it follows the release notice
    stepdown_timeout: 5s
EOF
}

start_pod() { # identity
	config "$1" >"$TMP/$1.yaml"
	"$LK" agent -c "$TMP/$1.yaml" 2>"$TMP/$1.agent.log" &
	PIDS+=($!)
	eval "AGENT_${1//-/_}=$!"
	for _ in $(seq 100); do [ -S "$TMP/$1.sock" ] && break; sleep 0.1; done
	"$APP" -s "$TMP/$1.sock" -n "$1" scheduler >"$TMP/$1.app.log" 2>&1 &
	PIDS+=($!)
}

touch "$TMP/pod-a.app.log" "$TMP/pod-b.app.log"
tail -q -n +1 -f "$TMP/pod-a.app.log" "$TMP/pod-b.app.log" &
TAIL=$!
PIDS+=($TAIL)

say "Starting pod-a (agent + app): it becomes the leader"
if [ "$BACKEND" = redis ]; then
	say "(the Redis was started moments ago: no replica leads before it has been up one ttl,"
	say " since it might have restarted during a tenure; the first LEADER comes in ~10s)"
fi
start_pod pod-a
wait_for "$TMP/pod-a.app.log" "LEADER" 30
say "Starting pod-b (agent + app): it follows"
start_pod pod-b
wait_for "$TMP/pod-b.app.log" "follower"
sleep 1.5
say "leasekeeper status (pod-a)"
"$LK" status -s "$TMP/pod-a.sock"
show_key

say "Kubernetes deletes pod-a: its preStop hook runs 'leasekeeper drain', then SIGTERM"
"$LK" drain -s "$TMP/pod-a.sock" || true
kill -TERM "$AGENT_pod_a" 2>/dev/null || true
wait "$AGENT_pod_a" 2>/dev/null || true
wait_for "$TMP/pod-b.app.log" "LEADER"
sleep 1.2

say "leasekeeper status (pod-b)"
"$LK" status -s "$TMP/pod-b.sock"
show_key

say "What happened"
grep -E "stepping down|lock drained|drain complete" "$TMP/pod-a.agent.log" | sed 's/^/pod-a agent: /'
grep -E "lock acquired" "$TMP/pod-b.agent.log" | sed 's/^/pod-b agent: /'
python3 - "$TMP/pod-a.agent.log" "$TMP/pod-b.agent.log" <<'EOF'
import re, sys
from datetime import datetime
def ts(path, pattern):
    for line in open(path):
        if pattern in line:
            return datetime.strptime(line.split()[0][3:], "%Y-%m-%dT%H:%M:%S.%fZ")
released = ts(sys.argv[1], "lock drained")
acquired = ts(sys.argv[2], "lock acquired")
if released and acquired:
    gap = (acquired - released).total_seconds() * 1000
    print(f"\nhandoff: pod-b led {gap:.0f} ms after pod-a released "
          f"(without leasekeeper it would have waited for the 10s TTL)")
EOF
kill "$TAIL" 2>/dev/null || true
