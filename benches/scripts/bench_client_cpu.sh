#!/usr/bin/env bash
# The CPU `sonde bench`'s client spends per streamed 64-token request (#17's figure): the
# simulator serves the peers benchmark's answer (benches/peers/scenario.toml, model `zero`:
# 64 tokens, no injected delay) on one thread; `sonde bench` sends REQUESTS requests, one
# at a time, and again REQUESTS + EXTRA; the difference of their CPU (user + system, from
# getrusage of the finished child) divided by EXTRA is the cost of one request, start-up and
# report writing cancelled out. Prints it in µs, median of ROUNDS, and beside it the floor:
# the same exchange by `examples/raw_client.rs` (a socket, the request's bytes, the answer
# read to its last chunk, nothing parsed), measured the same way in the same run.
#
#   benches/scripts/bench_client_cpu.sh
#   REQUESTS=500 EXTRA=5000 ROUNDS=5 CONCURRENCY=1 benches/scripts/bench_client_cpu.sh
#   SONDE=path/to/another/sonde benches/scripts/bench_client_cpu.sh   # another version
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${REQUESTS:-500}
EXTRA=${EXTRA:-5000}
ROUNDS=${ROUNDS:-5}
CONCURRENCY=${CONCURRENCY:-1}
PORT=${PORT:-18788}
SONDE=${SONDE:-target/release/sonde}

source benches/scripts/simulator.sh
cargo build --release --quiet --example raw_client
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

python3 - "$work" "$REQUESTS" "$EXTRA" "$ROUNDS" "$CONCURRENCY" "$SONDE" "$PORT" <<'PY'
import os, resource, statistics, subprocess, sys

work, requests, extra, rounds, concurrency = sys.argv[1], *map(int, sys.argv[2:6])
sonde, port = sys.argv[6], sys.argv[7]
runs = 0

def sonde_bench(n):
    global runs
    runs += 1
    return [sonde, "bench", "--config", f"{work}/sonde.toml", "--target", "sim/zero",
            "--probe", "count64", "--requests", str(n), "--concurrency", str(concurrency),
            "--out", f"{work}/report-{runs}"]

def raw_client(n):
    return ["target/release/examples/raw_client", f"127.0.0.1:{port}", "zero", str(n)]

def cpu_of(command):
    """CPU seconds (user + system) of one finished child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

def per_request(client):
    """µs per request of `client`, median of the rounds, and the rounds."""
    cpu_of(client(requests))  # warm the page cache and the simulator
    figures = []
    for _ in range(rounds):
        small, large = cpu_of(client(requests)), cpu_of(client(requests + extra))
        figures.append((large - small) / extra * 1e6)
    return statistics.median(figures), ", ".join(f"{v:.1f}" for v in figures)

(client, client_rounds), (floor, floor_rounds) = per_request(sonde_bench), per_request(raw_client)
print(f"sonde bench client CPU per streamed 64-token request: {client:.1f} µs "
      f"(median of {rounds}; rounds {client_rounds}; concurrency {concurrency})")
print(f"the exchange alone (examples/raw_client.rs): {floor:.1f} µs "
      f"(rounds {floor_rounds}); sonde's own: {client - floor:.1f} µs")
PY
