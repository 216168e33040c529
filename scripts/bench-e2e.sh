#!/usr/bin/env bash
# End to end and soak (issue #9): a critical result in over MLLP → the
# webhook backend receiving its alert, measured by switchboard-load acting
# as the webhook (`--e2e-listen`), paced at RATE msg/s for SECS seconds; and
# the gateway's resident memory sampled every SAMPLE seconds while it runs.
#
# Usage: scripts/bench-e2e.sh
# Environment (defaults in brackets):
#   RATE [1000]  SECS [60]  CONNECTIONS [4]  SAMPLE [10]
#   OUT [target/bench/e2e-<timestamp>]   NO_BUILD=1 skips the release build
# The soak of BENCHMARKS.md is `SECS=600 scripts/bench-e2e.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
RATE=${RATE:-1000}
SECS=${SECS:-60}
CONNECTIONS=${CONNECTIONS:-4}
SAMPLE=${SAMPLE:-10}
OUT=${OUT:-$repo/target/bench/e2e-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/sb-e2e.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf 'bench-e2e: %s\n' "$*" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bins"
  cargo build --release --bins
fi
sb=$repo/target/release/switchboard
load=$repo/target/release/switchboard-load
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
hook=$(free_port); mllp=$(free_port); http=$(free_port)

mkdir -p "$work/rosters" "$work/mappings"
cat > "$work/rosters/ward.toml" <<TOML
name = "ward"
timezone = "America/New_York"
[[members]]
id = "rn-a"
contacts = { webhook = "http://127.0.0.1:$hook/hook/rn-a" }
[[members]]
id = "rn-b"
contacts = { webhook = "http://127.0.0.1:$hook/hook/rn-b" }
[[roles]]
name = "charge-nurse"
[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1
[failsafe]
member = "rn-b"
TOML
cat > "$work/mappings/m.toml" <<'TOML'
[[rules]]
name = "icu-critical"
match = { kind = "result", flags = ["HH"], units = ["ICU"] }
route = { person = "rn-a", priority = "stat", escalation = "slow" }
[escalations.slow]
tiers = [{ route = true, timeout_secs = 3600 }, { failsafe = true, timeout_secs = 3600 }]
TOML
cat > "$work/switchboard.toml" <<TOML
rosters_dir = "rosters"
mappings_dir = "mappings"
[storage]
data_dir = "data"
[reload]
watch_files = false
[[senders]]
name = "load"
msh3 = ["*"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
[[backends]]
name = "hook"
kind = "webhook"
contact = "webhook"
profile = "limited"
secret_env = "SB_BENCH_HOOK_SECRET"
TOML

SB_BENCH_HOOK_SECRET=bench "$sb" serve --config "$work/switchboard.toml" \
  --mllp "127.0.0.1:$mllp" --http "127.0.0.1:$http" >"$OUT/gateway.log" 2>&1 &
gw=$!
pids+=("$gw")
for _ in $(seq 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$mllp") 2>/dev/null && break
  sleep 0.05
done

# Resident memory every SAMPLE seconds while the run lasts.
( while kill -0 "$gw" 2>/dev/null; do
    printf '%s %s\n' "$(date -u +%s)" "$(awk '/VmRSS/ {print $2}' "/proc/$gw/status")"
    sleep "$SAMPLE"
  done ) > "$OUT/rss.txt" &
pids+=("$!")

messages=$(( RATE * SECS ))
log "$messages critical results at $RATE msg/s over $CONNECTIONS connections"
"$load" --addr "127.0.0.1:$mllp" --messages "$messages" --connections "$CONNECTIONS" \
  --window 4 --rate "$RATE" --e2e-listen "127.0.0.1:$hook" --json >"$OUT/e2e.json" \
  || log "the load tool reported errors (see $OUT/e2e.json)"
sleep 1
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
r = json.load(open(f"{out}/e2e.json"))
rss = [int(l.split()[1]) for l in open(f"{out}/rss.txt") if len(l.split()) == 2]
e = r["e2e"]
print(f"| {r['messages']} msgs at {r['msgs_per_sec']:.0f} msg/s | ACK p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms | "
      f"e2e p50 {e['p50_ms']} ms, p99 {e['p99_ms']} ms, max {e['max_ms']} ms | "
      f"received {e['received']}/{e['sent']}, repeated {e['repeated']}, errors {r['errors']} |")
if len(rss) >= 3:
    first, last, peak = rss[1], rss[-1], max(rss[1:])
    print(f"RSS KiB: after warm-up {first}, end {last}, peak {peak}, growth {100.0*(last-first)/first:+.1f} %  "
          f"({len(rss)} samples)")
PY
