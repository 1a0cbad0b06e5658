#!/usr/bin/env bash
# The CPU `sonde bench`'s client spends per streamed 64-token request (#17's figure): the
# simulator serves the peers benchmark's answer (benches/peers/scenario.toml, model `zero`:
# 64 tokens, no injected delay) on one thread; `sonde bench` sends REQUESTS requests, one
# at a time, and again REQUESTS + EXTRA; the difference of their CPU (user + system, from
# getrusage of the finished child) divided by EXTRA is the cost of one request, start-up and
# report writing cancelled out. Prints it in µs, median of ROUNDS.
#
#   benches/scripts/bench_client_cpu.sh
#   REQUESTS=500 EXTRA=5000 ROUNDS=5 CONCURRENCY=1 benches/scripts/bench_client_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${REQUESTS:-500}
EXTRA=${EXTRA:-5000}
ROUNDS=${ROUNDS:-5}
CONCURRENCY=${CONCURRENCY:-1}
PORT=${PORT:-18788}

source benches/scripts/simulator.sh
target/release/sonde simulate --listen "127.0.0.1:$PORT" --scenario benches/peers/scenario.toml \
  --seed 1 --threads 1 > "$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 50); do
  if curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1; then break; fi
  sleep 0.1
done
mkdir -p "$work/probes"
cp benches/peers/probes/count64.toml "$work/probes/"
sed "s/18787/$PORT/" benches/peers/sonde.toml > "$work/sonde.toml"

python3 - "$work" "$REQUESTS" "$EXTRA" "$ROUNDS" "$CONCURRENCY" <<'PY'
import os, resource, statistics, subprocess, sys

work, requests, extra, rounds, concurrency = sys.argv[1], *map(int, sys.argv[2:])
runs = 0

def cpu_of(n):
    """CPU seconds (user + system) of one `sonde bench` of n requests."""
    global runs
    runs += 1
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        ["target/release/sonde", "bench", "--config", f"{work}/sonde.toml",
         "--target", "sim/zero", "--probe", "count64", "--requests", str(n),
         "--concurrency", str(concurrency), "--out", f"{work}/report-{runs}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

cpu_of(requests)  # warm the page cache and the simulator
per_request = []
for _ in range(rounds):
    small, large = cpu_of(requests), cpu_of(requests + extra)
    per_request.append((large - small) / extra * 1e6)
print(f"sonde bench client CPU per streamed 64-token request: "
      f"{statistics.median(per_request):.1f} µs (median of {rounds}; "
      f"rounds {', '.join(f'{v:.1f}' for v in per_request)}; concurrency {concurrency})")
PY
