#!/usr/bin/env bash
# `sonde probe` against 200 targets on the simulator with zero injected delay: wall time and
# peak RSS of the probing process (GNU time). Usage: benches/scripts/probe_200_targets.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=${1:-200}
port=${SONDE_BENCH_PORT:-18787}
# shellcheck source=simulator.sh
source benches/scripts/simulator.sh
{
  printf '[[providers]]\nname = "sim"\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\nprobes = ["ping", "stream"]\n' "$port"
  for i in $(seq 1 "$targets"); do
    printf '[[providers.models]]\nid = "model-%03d"\n' "$i"
  done
} > "$work/sonde.toml"

start_simulator "$port"

/usr/bin/time -v target/release/sonde probe --config "$work/sonde.toml" --format json \
  > "$work/out.jsonl" 2> "$work/time.txt" || true
runs=$(wc -l < "$work/out.jsonl")
ok=$(grep -c '"outcome":"ok"' "$work/out.jsonl" || true)
wall=$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
cpu_user=$(grep 'User time' "$work/time.txt" | awk '{print $NF}')
cpu_sys=$(grep 'System time' "$work/time.txt" | awk '{print $NF}')
echo "targets=$targets runs=$runs ok=$ok wall=$wall peak_rss_kib=$rss user_s=$cpu_user sys_s=$cpu_sys"
