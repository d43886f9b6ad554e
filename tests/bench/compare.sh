#!/usr/bin/env bash
# Side-by-side load comparison: Weft (strict and relaxed durability, persistence on) against the
# y-websocket reference server (`@y/websocket-server` 0.1.1, in memory) and a null relay
# (`weft-relay`: forwards each frame to the room's other members, keeps no document: the floor),
# driven by `weft-bench`.
#
#   tests/bench/compare.sh                                   # every scenario, 3 runs, ~20 s each
#   SECONDS=5 SCENARIOS="echo2 hot-room" tests/bench/compare.sh   # a short run
#
# Environment:
#   SCENARIOS   scenarios to run (default: echo2 hot-room many-rooms idle big-doc saturation
#               crowd-presence join-storm many-writers)
#   SECONDS     send window of each phase, passed to `weft-bench --seconds` (default 20). Bash
#               imports SECONDS and counts up from it, so it is read on the first line below.
#   RUNS        runs per scenario and server (default 3); the table shows medians
#   SERVERS     which servers (default: relay peer weft-strict weft-relaxed). The relay keeps no
#               document, so it sits out the scenarios that join one (big-doc, join-storm).
#   SERVER_CPU / BENCH_CPU   cores for `taskset` (default 0 and 1; no pinning on one core)
#   YWS_DIR     a directory where `npm install @y/websocket-server@0.1.1` was already run
#   OUT_DIR     where raw JSON reports and the table go (default target/bench-compare/<time>)
#
# `big-doc` builds its ~260k-edit seed history once (about 3 minutes, cached in OUT_DIR).
# Each run gets a fresh server process (and for Weft a fresh data directory), so runs do not see
# each other's rooms. Only 127.0.0.1 is used. Every process this script starts is stopped on exit.
BENCH_SECS_RAW=${SECONDS:-0}
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCENARIOS=${SCENARIOS:-"echo2 hot-room many-rooms idle big-doc saturation crowd-presence join-storm many-writers"}
BENCH_SECS=20
if [[ "$BENCH_SECS_RAW" =~ ^[0-9]+$ ]] && ((BENCH_SECS_RAW > 0)); then
    BENCH_SECS=$BENCH_SECS_RAW
fi
RUNS=${RUNS:-3}
SERVERS=${SERVERS:-"relay peer weft-strict weft-relaxed"}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
OUT_DIR=${OUT_DIR:-"$ROOT/target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)"}
mkdir -p "$OUT_DIR"

STARTED_PIDS=()
TMP_DIRS=()
cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    local d
    for d in "${TMP_DIRS[@]}"; do
        rm -rf -- "$d"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[compare] $*" >&2; }

if [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c "$SERVER_CPU")
    PIN_BENCH=(taskset -c "$BENCH_CPU")
else
    log "only one core: not pinning"
    PIN_SERVER=()
    PIN_BENCH=()
fi

# crowd-presence holds 1,500 connections: both ends of each count against the open-file limit
# of this shell's children (the server and the load generator).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
    log "open-file limit $(ulimit -n) is low for crowd-presence (1,500 connections); raise ulimit -Hn"
fi

log "building weft, weft-bench and weft-relay (release)"
(cd "$ROOT" && cargo build --release --quiet -p weft-server --bin weft -p weft-tests --bin weft-bench --bin weft-relay)
TARGET_DIR=${CARGO_TARGET_DIR:-"$ROOT/target"}
WEFT="$TARGET_DIR/release/weft"
BENCH="$TARGET_DIR/release/weft-bench"
RELAY="$TARGET_DIR/release/weft-relay"

if [[ " $SERVERS " == *" peer "* ]]; then
    if [ -z "${YWS_DIR:-}" ]; then
        YWS_DIR=$(mktemp -d -t weft-yws.XXXXXX)
        TMP_DIRS+=("$YWS_DIR")
        log "installing @y/websocket-server@0.1.1 into $YWS_DIR"
        # 0.1.5 does not install (it needs an unpublished Yjs 14). Install scripts are skipped:
        # they only build leveldown, which the in-memory server does not use.
        npm install --prefix "$YWS_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error \
            @y/websocket-server@0.1.1 >&2
    fi
    PEER_JS="$YWS_DIR/node_modules/@y/websocket-server/src/server.js"
    [ -f "$PEER_JS" ] || { log "missing $PEER_JS"; exit 1; }
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until 127.0.0.1:$1 accepts connections and $2 is alive.
wait_port() {
    local i
    for i in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Starts server $1 on port $2, logging to $3; sets SERVER_PID and URL.
start_server() {
    local name=$1 port=$2 logfile=$3
    case "$name" in
        peer)
            HOST=127.0.0.1 PORT=$port "${PIN_SERVER[@]}" node "$PEER_JS" >"$logfile" 2>&1 &
            SERVER_PID=$!
            URL="ws://127.0.0.1:$port/{room}"
            ;;
        relay)
            "${PIN_SERVER[@]}" "$RELAY" --bind "127.0.0.1:$port" >"$logfile" 2>&1 &
            SERVER_PID=$!
            URL="ws://127.0.0.1:$port/{room}"
            ;;
        weft-strict | weft-relaxed)
            local data
            data=$(mktemp -d -t weft-bench-data.XXXXXX)
            TMP_DIRS+=("$data")
            RUST_LOG=${WEFT_LOG:-warn} "${PIN_SERVER[@]}" "$WEFT" --bind "127.0.0.1:$port" \
                --data "$data" --durability "${name#weft-}" \
                --max-frames-per-sec 1000000 --max-bytes-per-sec 2000000000 \
                --max-connections-per-ip 100000 --max-connects-per-sec 0 \
                --max-room-connections 100000 \
                >"$logfile" 2>&1 &
            SERVER_PID=$!
            URL="ws://127.0.0.1:$port/ws/{room}"
            ;;
        *)
            log "unknown server $name"
            exit 1
            ;;
    esac
    STARTED_PIDS+=("$SERVER_PID")
    wait_port "$port" "$SERVER_PID" || { log "$name did not start; see $logfile"; exit 1; }
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

for scenario in $SCENARIOS; do
    for run in $(seq 1 "$RUNS"); do
        for server in $SERVERS; do
            if [ "$server" = relay ] && { [ "$scenario" = big-doc ] || [ "$scenario" = join-storm ]; }; then
                continue
            fi
            port=$(free_port)
            dir="$OUT_DIR/$server/$scenario"
            mkdir -p "$dir"
            start_server "$server" "$port" "$dir/server-$run.log"
            log "$scenario run $run/$RUNS against $server (pid $SERVER_PID, port $port)"
            # A hard wall-clock cap on top of the bench's own bounds.
            if ! timeout --kill-after=10 $((BENCH_SECS * 6 + 600)) "${PIN_BENCH[@]}" "$BENCH" \
                --url "$URL" --scenario "$scenario" --seconds "$BENCH_SECS" \
                --server-pid "$SERVER_PID" --big-doc-cache "$OUT_DIR/big-doc-seed.bin" --json >"$dir/run-$run.json" 2>"$dir/run-$run.log"; then
                log "  run reported a failure (see $dir/run-$run.log)"
            fi
            stop_server "$SERVER_PID"
        done
    done
done

python3 - "$OUT_DIR" "$SERVERS" "$SCENARIOS" "$RUNS" "$BENCH_SECS" <<'EOF' | tee "$OUT_DIR/table.md"
import json, os, statistics, sys

out_dir, servers, scenarios, runs, secs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
TYPING = ["deliveries_per_s", "delivered_ratio", "latency_p50_ms", "latency_p99_ms",
          "latency_p999_ms", "latency_max_ms", "handshake_p50_ms", "server_cpu_pct",
          "server_rss_mib_after", "generator_cpu_pct"]
METRICS = {
    "idle": ["connects_per_s", "handshake_p50_ms", "handshake_p99_ms", "rss_kib_per_connection",
             "server_rss_mib_before", "server_rss_mib_after"],
    "big-doc": ["seed_chars", "seed_s", "join_seq_p50_ms", "join_seq_max_ms", "join_sim_p50_ms",
                "join_sim_max_ms", "server_cpu_pct", "server_rss_mib_after"],
    "crowd-presence": ["connections", "server_cpu_pct", "latency_p50_ms", "latency_p99_ms",
                       "delivered_ratio", "delivered_within_1s_ratio", "insert_delivered_ratio",
                       "closes", "server_rss_mib_after", "generator_cpu_pct"],
    "join-storm": ["doc_chars", "seed_s", "joins", "join_p50_ms", "join_p99_ms", "join_max_ms",
                   "server_rss_mib_peak", "server_rss_mib_after", "server_cpu_pct"],
}
# values[label][server][metric] = [one value per run]; ok[label][server] = [bool per run]
values, ok, order = {}, {}, []
for server in servers:
    for scenario in scenarios:
        if server == "relay" and scenario in ("big-doc", "join-storm"):
            continue  # the relay keeps no document: nothing to join
        d = os.path.join(out_dir, server, scenario)
        for run in range(1, int(runs) + 1):
            try:
                with open(os.path.join(d, f"run-{run}.json")) as f:
                    reports = json.load(f)
            except (OSError, ValueError):
                reports = [{"scenario": scenario, "ok": False}]
            for r in reports:
                label = r.get("scenario", scenario)
                if label not in order:
                    order.append(label)
                ok.setdefault(label, {}).setdefault(server, []).append(bool(r.get("ok")))
                for k, v in r.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        values.setdefault(label, {}).setdefault(server, {}).setdefault(k, []).append(v)

def med(label, server, metric):
    xs = values.get(label, {}).get(server, {}).get(metric, [])
    return statistics.median(xs) if xs else None

def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"

weft = [s for s in servers if s not in ("peer", "relay")]
bases = [b for b in ("peer", "relay") if b in servers]
head = ["scenario", "metric"] + servers + [f"{s}/{b}" for b in bases for s in weft]
print(f"Medians of {runs} run(s), {secs} s send window per phase; server pinned to one core, "
      "load generator to another. `relay` is the null relay (the floor); it keeps no document "
      "and sits out big-doc and join-storm.\n")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for label in order:
    base = label.split("@")[0]
    okrow = [f"{sum(ok[label].get(s, []))}/{len(ok[label].get(s, []))}" for s in servers]
    print(f"| {label} | valid runs | " + " | ".join(okrow) + " |" + " |" * (len(head) - 2 - len(servers)))
    for m in METRICS.get(base, TYPING):
        row = [med(label, s, m) for s in servers]
        if all(v is None for v in row):
            continue
        ratios = []
        for b in bases:
            p = med(label, b, m)
            for s in weft:
                w = med(label, s, m)
                ratios.append(f"{w / p:.2f}" if (w is not None and p) else "–")
        print(f"| {label} | {m} | " + " | ".join(fmt(v) for v in row) + " | " + " | ".join(ratios) + (" |" if ratios else ""))

# The saturation knee: the lowest per-client rate whose median p99 passes 50 ms ("> top rate"
# when none does), and whether any step lost an update.
steps = sorted((float(l.split("@")[1]), l) for l in order if l.startswith("saturation@"))
if steps:
    knees, lossless = [], []
    for s in servers:
        knee = next((r for r, l in steps if (med(l, s, "latency_p99_ms") or 0) > 50), None)
        knees.append(f"{knee:g}/s" if knee else f"> {steps[-1][0]:g}/s")
        worst = min((min(values.get(l, {}).get(s, {}).get("delivered_ratio", [0])) for _, l in steps))
        lossless.append(f"{worst:.3f}")
    print("| saturation | rate where p99 > 50 ms | " + " | ".join(knees) + " |" + " |" * (len(head) - 2 - len(servers)))
    print("| saturation | worst delivered ratio | " + " | ".join(lossless) + " |" + " |" * (len(head) - 2 - len(servers)))
EOF
log "raw reports and table.md in $OUT_DIR"
