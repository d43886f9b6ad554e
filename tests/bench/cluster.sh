#!/usr/bin/env bash
# Cluster benchmark: what NATS JetStream costs and what crossing nodes costs, driven by
# `weft-bench` against real servers on this machine.
#
#   tests/bench/cluster.sh                              # 3 runs of each, 10 s send windows
#   SECONDS=5 RUNS=1 tests/bench/cluster.sh             # a short run
#
# Setups, each in strict and relaxed durability:
#   sled      one Weft node on sled (no cluster): the baseline
#   nats-1    one Weft node on NATS JetStream (one NATS server): the cost of JetStream's acks
#   nats-2x   two Weft nodes on that NATS server, clients alternating between them
#             (`weft-bench --url2`): in echo2 every delivery crosses nodes, in hot-room half do
# Scenarios: echo2 (2 typists, 50 updates/s each), hot-room (50 members, 2 updates/s each),
# idle (open connections: memory per connection, connects/s; on one node).
# Server CPU and RSS are the first node's. Only 127.0.0.1 is used; everything this script
# starts is stopped on exit. Needs nats-server (Debian: apt-get install nats-server).
BENCH_SECS_RAW=${SECONDS:-0}
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_SECS=10
if [[ "$BENCH_SECS_RAW" =~ ^[0-9]+$ ]] && ((BENCH_SECS_RAW > 0)); then
    BENCH_SECS=$BENCH_SECS_RAW
fi
RUNS=${RUNS:-3}
SETUPS=${SETUPS:-"sled nats-1 nats-2x"}
SCENARIOS=${SCENARIOS:-"echo2 hot-room idle"}
OUT_DIR=${OUT_DIR:-"$ROOT/target/bench-cluster/$(date -u +%Y%m%dT%H%M%SZ)"}
mkdir -p "$OUT_DIR"
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS_SERVER" ] || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }

PIDS=()
TMP=$(mktemp -d -t weft-bench-cluster.XXXXXX)
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[cluster-bench] $*" >&2; }

log "building weft and weft-bench (release)"
(cd "$ROOT" && cargo build --release --quiet -p weft-server --bin weft -p weft-tests --bin weft-bench)
TARGET_DIR=${CARGO_TARGET_DIR:-"$ROOT/target"}
WEFT="$TARGET_DIR/release/weft"
BENCH="$TARGET_DIR/release/weft-bench"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    local i
    for i in $(seq 1 150); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Starts a NATS server with JetStream on a fresh store; sets NATS_URL and NATS_PID.
start_nats() {
    local port store
    port=$(free_port)
    store=$(mktemp -d -p "$TMP" nats.XXXXXX)
    printf 'port: %s\nmax_payload: 8MB\njetstream { store_dir: "%s" }\n' "$port" "$store" >"$store/nats.conf"
    "$NATS_SERVER" -c "$store/nats.conf" >"$store/log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    wait_port "$port" "$NATS_PID" || { log "nats-server did not start"; exit 1; }
    NATS_URL="nats://127.0.0.1:$port"
}

# Starts a Weft node ($1: durability, $2: extra flags); sets NODE_PID and NODE_URL.
start_node() {
    local port dir
    port=$(free_port)
    dir=$(mktemp -d -p "$TMP" node.XXXXXX)
    # shellcheck disable=SC2086
    RUST_LOG=warn "$WEFT" --bind "127.0.0.1:$port" --data "$dir/data" --durability "$1" \
        --max-frames-per-sec 1000000 --max-bytes-per-sec 2000000000 \
        --max-connections-per-ip 100000 --max-connects-per-sec 0 --max-room-connections 100000 \
        $2 >"$dir/log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_port "$port" "$NODE_PID" || { log "weft did not start: $(tail -3 "$dir/log")"; exit 1; }
    NODE_URL="ws://127.0.0.1:$port/ws/{room}"
}

# Stops the Weft nodes first (they flush to NATS on the way out), then NATS.
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    PIDS=()
}

for scenario in $SCENARIOS; do
    for setup in $SETUPS; do
        [ "$scenario" = idle ] && [ "$setup" = nats-2x ] && continue
        for durability in strict relaxed; do
            for run in $(seq 1 "$RUNS"); do
                dir="$OUT_DIR/$setup-$durability/$scenario"
                mkdir -p "$dir"
                extra=()
                case "$setup" in
                    sled) start_node "$durability" "" ;;
                    nats-1) start_nats; start_node "$durability" "--nats $NATS_URL" ;;
                    nats-2x)
                        start_nats
                        start_node "$durability" "--nats $NATS_URL"
                        first_pid=$NODE_PID first_url=$NODE_URL
                        start_node "$durability" "--nats $NATS_URL"
                        extra=(--url2 "$NODE_URL")
                        NODE_PID=$first_pid NODE_URL=$first_url
                        ;;
                esac
                log "$scenario, $setup $durability, run $run/$RUNS"
                timeout --kill-after=10 $((BENCH_SECS * 6 + 300)) "$BENCH" --url "$NODE_URL" \
                    "${extra[@]}" --scenario "$scenario" --seconds "$BENCH_SECS" \
                    --server-pid "$NODE_PID" --json >"$dir/run-$run.json" 2>"$dir/run-$run.log" ||
                    log "  run reported a failure (see $dir/run-$run.log)"
                stop_all
            done
        done
    done
done

python3 - "$OUT_DIR" <<'PY' | tee "$OUT_DIR/table.md"
import json, os, statistics, sys
out = sys.argv[1]
cols = {"echo2": ["latency_p50_ms", "latency_p99_ms", "delivered_ratio", "server_cpu_pct"],
        "hot-room": ["latency_p50_ms", "latency_p99_ms", "delivered_ratio", "server_cpu_pct",
                     "server_rss_mib_after"],
        "idle": ["connects_per_s", "rss_kib_per_connection", "server_rss_mib_after"]}
rows = {}
for setup in sorted(os.listdir(out)):
    p = os.path.join(out, setup)
    if not os.path.isdir(p):
        continue
    for scenario in sorted(os.listdir(p)):
        vals = {}
        for f in sorted(os.listdir(os.path.join(p, scenario))):
            if not f.endswith(".json"):
                continue
            try:
                reports = json.load(open(os.path.join(p, scenario, f)))
            except Exception:
                continue
            for r in reports:
                for k in cols.get(scenario, []):
                    v = r.get(k)
                    if isinstance(v, (int, float)):
                        vals.setdefault(k, []).append(v)
        rows.setdefault(scenario, []).append((setup, vals))
for scenario, entries in rows.items():
    keys = cols.get(scenario, [])
    print(f"\n### {scenario} (median of runs)\n")
    print("| setup | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for setup, vals in entries:
        cells = [f"{statistics.median(vals[k]):.3g}" if vals.get(k) else "–" for k in keys]
        print(f"| {setup} | " + " | ".join(cells) + " |")
PY
