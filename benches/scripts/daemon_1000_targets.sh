#!/usr/bin/env bash
# `sonde run` probing 1,000 targets every minute on the simulator (zero injected delay) for
# DURATION seconds (default 300): CPU seconds per 1,000 probes and peak RSS of the daemon
# (GNU time), and the p50/p99/max queue lag of its runs (how late each was sent after its
# scheduled time, from the records). Usage: benches/scripts/daemon_1000_targets.sh [TARGETS]
# [DURATION]; #17's figure is `benches/scripts/daemon_1000_targets.sh 10000 300`.
# `SONDE=other/sonde` runs another build's daemon against this build's simulator.
# `EVERY_S=10` probes every 10 s instead of every 60 (the limits scaled with it);
# `PUBLISH_EVERY=10s` turns on publishing and the server (on SONDE_BENCH_PORT + 1): #17's
# "500 targets every 10 s with publishing" is
# `EVERY_S=10 PUBLISH_EVERY=10s benches/scripts/daemon_1000_targets.sh 500 180`.
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=${1:-1000}
duration=${2:-300}
every_s=${EVERY_S:-60}
port=${SONDE_BENCH_PORT:-18788}
sonde=${SONDE:-target/release/sonde}
# shellcheck source=simulator.sh
source benches/scripts/simulator.sh
# Ten providers of 100 targets each, limits high enough that every ping is sent.
{
  printf '[store]\npath = "sonde.db"\n\n[schedules]\nping = "every %ss"\n\n' "$every_s"
  if [ -n "${PUBLISH_EVERY:-}" ]; then
    printf '[publish]\nevery = "%s"\n\n[server]\nlisten = "127.0.0.1:%s"\n\n' \
      "$PUBLISH_EVERY" $((port + 1))
  fi
  per=$(( (targets + 9) / 10 ))
  for p in $(seq 1 10); do
    printf '[[providers]]\nname = "sim%02d"\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\nrpm = %d\nmax_concurrency = 8\nprobes = ["ping"]\n' "$p" "$port" $(( per * 2 * 60 / every_s ))
    for i in $(seq 1 "$per"); do
      printf '[[providers.models]]\nid = "model-%02d-%03d"\ninput_price = 0.1\noutput_price = 0.2\n' "$p" "$i"
    done
  done
} > "$work/sonde.toml"

start_simulator "$port"

/usr/bin/time -v timeout -s INT "$duration" "$sonde" run --config "$work/sonde.toml" \
  > /dev/null 2> "$work/daemon.log" || true
grep -E 'Maximum resident|User time|System time|Elapsed' "$work/daemon.log" > "$work/time.txt" || true
"$sonde" export --config "$work/sonde.toml" --since 1h --format json > "$work/runs.jsonl"
runs=$(wc -l < "$work/runs.jsonl")
ok=$(grep -c '"outcome":"ok"' "$work/runs.jsonl" || true)
lag=$(python3 - "$work/runs.jsonl" <<'PY'
import json, math, sys
lags = sorted(json.loads(line).get("queue_lag_ms") or 0.0 for line in open(sys.argv[1]))
rank = lambda q: lags[max(0, math.ceil(q * len(lags)) - 1)] if lags else float("nan")
print(f"queue_lag_ms_p50={rank(0.5):.1f} queue_lag_ms_p99={rank(0.99):.1f} queue_lag_ms_max={lags[-1] if lags else float('nan'):.1f}")
PY
)
rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
user=$(grep 'User time' "$work/time.txt" | awk '{print $NF}')
sys=$(grep 'System time' "$work/time.txt" | awk '{print $NF}')
cpu_per_1000=$(echo "($user + $sys) * 1000 / $runs" | bc -l)
db_kib=$(du -k "$work/sonde.db" | awk '{print $1}')
printf 'targets=%s duration_s=%s runs=%s ok=%s user_s=%s sys_s=%s cpu_s_per_1000_probes=%.3f peak_rss_kib=%s db_kib=%s %s\n' \
  "$targets" "$duration" "$runs" "$ok" "$user" "$sys" "$cpu_per_1000" "$rss" "$db_kib" "$lag"
