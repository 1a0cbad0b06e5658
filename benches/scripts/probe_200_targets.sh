#!/usr/bin/env bash
# `sonde probe` against 200 targets on the simulator with zero injected delay: wall time and
# peak RSS of the probing process (GNU time). Usage: benches/scripts/probe_200_targets.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=${1:-200}
port=${SONDE_BENCH_PORT:-18787}
work=$(mktemp -d)
sim_pid=""
trap 'kill "$sim_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet
printf '[default]\noutput_tokens = 16\n' > "$work/zero.toml"
{
  printf '[[providers]]\nname = "sim"\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$port"
  for i in $(seq 1 "$targets"); do
    printf '[[providers.models]]\nid = "model-%03d"\n' "$i"
  done
} > "$work/sonde.toml"

target/release/sonde simulate --listen "127.0.0.1:$port" --scenario "$work/zero.toml" --seed 1 > "$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 50); do
  if curl -sf "http://127.0.0.1:$port/healthz" > /dev/null 2>&1; then break; fi
  sleep 0.1
done

/usr/bin/time -v target/release/sonde probe --config "$work/sonde.toml" --format json \
  > "$work/out.jsonl" 2> "$work/time.txt" || true
runs=$(wc -l < "$work/out.jsonl")
ok=$(grep -c '"outcome":"ok"' "$work/out.jsonl" || true)
wall=$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
cpu_user=$(grep 'User time' "$work/time.txt" | awk '{print $NF}')
cpu_sys=$(grep 'System time' "$work/time.txt" | awk '{print $NF}')
echo "targets=$targets runs=$runs ok=$ok wall=$wall peak_rss_kib=$rss user_s=$cpu_user sys_s=$cpu_sys"
