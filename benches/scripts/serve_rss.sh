#!/usr/bin/env bash
# `sonde serve` over the publish bench's store (200 targets x 30 days, a run every 10
# minutes per target: run `cargo bench --bench publish` once to generate
# `target/sonde-bench-publish.db`), re-rendering every 10 s for DURATION seconds (default
# 120), while a client fetches `/feed.json` and `/metrics` every second and `/results.csv`
# (read from the store when asked for) every ten: peak RSS and RSS at
# the end (from /proc), the high-water mark once the first publish (a cold read of
# everything) is done, CPU seconds, and how long each publish took (the server's debug
# log).
# SONDE_BENCH_TARGETS=500 serves the 500-target store instead
# (`SONDE_BENCH_PUBLISH_TARGETS=500 cargo bench --bench publish` generates it).
# SONDE_BENCH_STORE=PATH serves another store of that fleet, e.g.
# `target/sonde-bench-publish-hour.db` (a dense last hour: a run per target every 10 s),
# which a run of the publish bench with SONDE_BENCH_PUBLISH_HOUR_EVERY_S=10 leaves. The
# store is served from a copy; SONDE_BENCH_IN_PLACE=1 serves it where it is (`sonde serve` opens it read-only), for a
# store too large to copy (5,000 targets: 14 GB).
# Usage: benches/scripts/serve_rss.sh [DURATION] [SONDE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-120}
binary=${2:-target/release/sonde}
port=${SONDE_BENCH_PORT:-18789}
targets=${SONDE_BENCH_TARGETS:-200}
store=target/sonde-bench-publish.db
[ "$targets" = 200 ] || store=target/sonde-bench-publish-$targets.db
store=${SONDE_BENCH_STORE:-$store}
[ -f "$store" ] || {
  echo "no $store: run SONDE_BENCH_PUBLISH_TARGETS=$targets cargo bench --bench publish first" >&2
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ "$binary" != target/release/sonde ] || cargo build --release --quiet
served=$work/sonde.db
if [ "${SONDE_BENCH_IN_PLACE:-}" = 1 ]; then
  served=$(realpath "$store")
else
  cp "$store" "$served"
fi
# The bench's fleet: 20 providers of TARGETS / 20 models, the stream probe (benches/common).
{
  printf '[store]\npath = "%s"\n\n[publish]\nevery = "10s"\n\n' "$served"
  for p in $(seq 0 19); do
    printf '[[providers]]\nname = "provider-%02d"\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nprobes = ["stream"]\n' "$p"
    for m in $(seq 0 $((targets / 20 - 1))); do
      printf '[[providers.models]]\nid = "model-%02d"\ngroup = "group-%02d"\ninput_price = 0.5\noutput_price = 1.5\n' "$m" "$m"
    done
  done
} > "$work/sonde.toml"
RUST_LOG=sonde=debug "$binary" serve --config "$work/sonde.toml" --listen "127.0.0.1:$port" \
  > /dev/null 2> "$work/serve.log" &
pid=$!
peak=0
first=
for second in $(seq 1 "$duration"); do
  sleep 1
  # The high-water mark once the first publish (a cold read of everything) is done: what
  # the later, kept publishes add shows apart from it.
  [ -n "$first" ] || ! grep -q 'published took' "$work/serve.log" ||
    first=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  curl -sf "http://127.0.0.1:$port/feed.json" > /dev/null || true
  curl -sf "http://127.0.0.1:$port/metrics" > /dev/null || true
  [ $((second % 10)) != 0 ] || curl -sf "http://127.0.0.1:$port/results.csv" > /dev/null || true
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "$rss" -gt "$peak" ] && peak=$rss
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
ticks=$(getconf CLK_TCK)
kill -INT "$pid"; wait "$pid" || true
took=$(grep -o 'took=[0-9.]*[mµ]*s' "$work/serve.log" | sed 's/took=//' | tr '\n' ' ')
printf 'targets=%s duration_s=%s rss_end_kib=%s peak_rss_kib=%s vm_hwm_kib=%s hwm_after_first_publish_kib=%s cpu_s=%.2f publishes: %s\n' \
  "$targets" "$duration" "$rss" "$peak" "$hwm" "${first:-0}" "$(echo "($utime + $stime) / $ticks" | bc -l)" "$took"
