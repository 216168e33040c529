#!/usr/bin/env bash
# Side-by-side load: Switchboard (durable, sealed journal) and the peer MLLP
# servers of ../shared/peers, driven by the same switchboard-load runs in one
# go, on loopback. Prints a markdown table (msg/s, ACK latency, server CPU
# per message, ratio to the fastest peer) and keeps every JSON report.
#
# Usage: scripts/bench-peers.sh
# Environment (defaults in brackets):
#   MESSAGES [20000]  CONNECTIONS [16]  WARMUP [2000]  WINDOW_PIPELINED [8]
#   SINGLE_MESSAGES [5000]  messages of the 1-connection runs
#   PEERS ["medplum-hl7 node-hl7-server python-hl7"]
#   OUT [target/bench/<timestamp>]  where reports and the table go
#   NO_BUILD=1  skip `cargo build --release --bins`
# Bounded: every load run is capped by `timeout` (RUN_SECS [300]) and every
# peer exits by itself after MAX_SECS [900]; everything started here is
# killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

MESSAGES=${MESSAGES:-20000}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-2000}
WINDOW_PIPELINED=${WINDOW_PIPELINED:-8}
SINGLE_MESSAGES=${SINGLE_MESSAGES:-5000}
PEERS=${PEERS:-"medplum-hl7 node-hl7-server python-hl7"}
RUN_SECS=${RUN_SECS:-300}
export MAX_SECS=${MAX_SECS:-900}
OUT=${OUT:-$repo/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
export PEERS_DIR=${PEERS_DIR:-$repo/target/peers}
peers_sh=$repo/../shared/peers

mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/sb-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf 'bench: %s\n' "$*" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bins"
  cargo build --release --bins
fi
sb=$repo/target/release/switchboard
load=$repo/target/release/switchboard-load
[ -x "$sb" ] && [ -x "$load" ] || { echo "bench: release binaries missing" >&2; exit 1; }

log "installing peers into $PEERS_DIR"
"$peers_sh/setup.sh" >&2

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP on 127.0.0.1:$1 (at most 20 s).
wait_port() {
  local i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: nothing listening on port $1" >&2
  return 1
}

# CPU time (user + system, clock ticks) of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# CPU time (user + system, milliseconds) of this shell's waited-for
# children, into variable $1 (`times` must run in this shell, not in $(...)).
children_ms() {
  times >"$work/times"
  printf -v "$1" '%s' "$(awk 'NR == 2 {
    split($1, u, /[ms]/); split($2, s, /[ms]/)
    printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000 }' "$work/times")"
}

manifest=$OUT/manifest.tsv
: >"$manifest"

# run LABEL PID WINDOW_LABEL load-args...
run() {
  local label=$1 pid=$2 file=$OUT/$3.json
  shift 3
  local before after cbefore cafter rc=0
  sleep 1
  before=$(cpu_ticks "$pid")
  children_ms cbefore
  log "$label: switchboard-load $*"
  timeout "$RUN_SECS" "$load" --json --timeout-secs 30 "$@" >"$file" 2>"$file.stderr" || rc=$?
  after=$(cpu_ticks "$pid")
  children_ms cafter
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$file" "$((after - before))" "$rc" \
    "$((cafter - cbefore))" >>"$manifest"
  if [ "$rc" != 0 ]; then log "$label: exit $rc (see $file.stderr)"; fi
}

# --- Switchboard on the demo config, fresh data dir, free ports ----------
cp "$repo/switchboard.toml" "$work/switchboard.toml"
cp -r "$repo/rosters" "$repo/mappings" "$work/"
mllp=$(free_port)
http=$(free_port)
"$sb" serve --config "$work/switchboard.toml" --data-dir "$work/data" \
  --mllp "127.0.0.1:$mllp" --http "127.0.0.1:$http" >"$OUT/switchboard.log" 2>&1 &
sb_pid=$!
pids+=("$sb_pid")
wait_port "$mllp"
log "switchboard pid $sb_pid on 127.0.0.1:$mllp"

common=(--messages "$MESSAGES" --connections "$CONNECTIONS" --warmup "$WARMUP")
run "Switchboard" "$sb_pid" sb-w1 --addr "127.0.0.1:$mllp" "${common[@]}" --window 1
run "Switchboard" "$sb_pid" sb-w$WINDOW_PIPELINED --addr "127.0.0.1:$mllp" "${common[@]}" --window "$WINDOW_PIPELINED"
run "Switchboard" "$sb_pid" sb-c1 --addr "127.0.0.1:$mllp" --messages "$SINGLE_MESSAGES" --connections 1 --warmup 500 --window 1
journal_rows=$(sqlite3 "$work/data/journal.sqlite3" 'select count(*) from messages' 2>/dev/null || echo "?")
kill "$sb_pid"; wait "$sb_pid" 2>/dev/null || true

# --- Peers, one at a time ------------------------------------------------
for peer in $PEERS; do
  port=$(free_port)
  pid=$("$peers_sh/start.sh" "$peer" "$port")
  pids+=("$pid")
  wait_port "$port"
  log "$peer pid $pid on 127.0.0.1:$port"
  case $peer in
    node-hl7-server)
      # Answers message n of a kept connection with n ACKs (peers/README.md).
      run "$peer" "$pid" "$peer-w1" --addr "127.0.0.1:$port" "${common[@]}" --one-per-connection ;;
    medplum-hl7)
      run "$peer" "$pid" "$peer-w1" --addr "127.0.0.1:$port" "${common[@]}" --window 1
      run "$peer" "$pid" "$peer-w$WINDOW_PIPELINED" --addr "127.0.0.1:$port" "${common[@]}" --window "$WINDOW_PIPELINED"
      run "$peer" "$pid" "$peer-c1" --addr "127.0.0.1:$port" --messages "$SINGLE_MESSAGES" --connections 1 --warmup 500 --window 1 ;;
    *)
      run "$peer" "$pid" "$peer-w1" --addr "127.0.0.1:$port" "${common[@]}" --window 1 ;;
  esac
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

# --- Table ----------------------------------------------------------------
python3 - "$manifest" "$(getconf CLK_TCK)" >"$OUT/table.md" <<'PY'
import json, sys
manifest, hz = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(manifest):
    label, path, ticks, rc, client_ms = line.rstrip("\n").split("\t")
    try:
        r = json.load(open(path))
    except Exception:
        r = None
    rows.append((label, r, int(ticks), int(rc), int(client_ms)))

def key(r):
    return (r["connections"], r["window"])

# Fastest peer per (connections, window); node-hl7-server's one connection
# per message counts as window 1.
fastest = {}
for label, r, _, rc, _ in rows:
    if r is None or label == "Switchboard" or r["errors"] > 0:
        continue
    k = key(r)
    if r["msgs_per_sec"] > fastest.get(k, (0, ""))[0]:
        fastest[k] = (r["msgs_per_sec"], label)

print("| server | connections | window | msg/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/msg | load tool CPU µs/msg | × fastest peer (same conns/window) | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, r, ticks, rc, client_ms in rows:
    if r is None:
        print(f"| {label} | | | failed (exit {rc}) | | | | | | | | |")
        continue
    win = "1 (new conn/msg)" if r["mode"].startswith("one") else str(r["window"])
    total = r["messages"] + r["warmup"]
    cpu_us = ticks / hz / total * 1e6 if total else 0
    client_us = client_ms / 1000 / total * 1e6 if total else 0
    f = fastest.get(key(r))
    ratio = f"{r['msgs_per_sec'] / f[0]:.2f} (vs {f[1]})" if f else "—"
    print(f"| {label} | {r['connections']} | {win} | {r['msgs_per_sec']:,.0f} | {r['p50_ms']:.2f} | "
          f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['max_ms']:.2f} | {cpu_us:.0f} | {client_us:.0f} | {ratio} | {r['errors']} |")
PY
{
  echo
  echo "Each row: $MESSAGES messages measured after $WARMUP warm-up (1-connection rows: $SINGLE_MESSAGES after 500),"
  echo "ORU/ADT/ORM/R40 mix, every answer checked. Server CPU = user+system time of the server process during"
  echo "the run (warm-up included) / messages; load tool CPU likewise for switchboard-load itself."
  echo "Switchboard journal rows after its runs: $journal_rows."
} >>"$OUT/table.md"
cat "$OUT/table.md"
log "reports in $OUT"
