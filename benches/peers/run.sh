#!/usr/bin/env bash
# sonde against its peers, side by side on this machine (see peers.py for what is measured):
# builds sonde (release), installs the peers from PyPI into a cached virtualenv (the openai
# SDK; vLLM's benchmark request function taken from the vllm wheel without its CUDA
# dependencies), measures how late this machine wakes a sleeping task (examples/wake_latency.rs),
# starts the simulator on 127.0.0.1:18787, measures wrk's floors, then runs peers.py, which
# prints the comparison and where each client's overhead goes; the wake-up latency follows.
#
#   benches/peers/run.sh            # full sweep, ~8 minutes
#   SECONDS_PER_STEP=2 benches/peers/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAI_VERSION=3.57.0
AIOHTTP_VERSION=3.14.5
VLLM_VERSION=0.33.0
VENV=${SONDE_PEERS_VENV:-target/peers-venv}
PORT=18787

cargo build --release --quiet --bin sonde --example wake_latency
SONDE=target/release/sonde
# How late this machine wakes a sleeping task, measured while it is otherwise idle: every
# TTFT measured over loopback pays it about three times, whatever the client.
WAKE=$(target/release/examples/wake_latency)

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import openai, aiohttp, tqdm, regex" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "openai==$OPENAI_VERSION" "aiohttp==$AIOHTTP_VERSION" tqdm regex
fi
# vLLM's request function: one module of the vllm wheel that needs only aiohttp and tqdm.
# The wheel's other 400 MB (CUDA kernels, torch) are neither installed nor imported.
VLLM_DIR="$VENV/vllm-bench-$VLLM_VERSION"
if [ ! -f "$VLLM_DIR/endpoint_request_func.py" ]; then
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download --quiet --no-deps "vllm==$VLLM_VERSION" -d "$tmp"
  mkdir -p "$VLLM_DIR"
  "$VENV/bin/python" - "$tmp"/vllm-*.whl "$VLLM_DIR" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = z.read("vllm/benchmarks/lib/endpoint_request_func.py")
open(f"{out}/endpoint_request_func.py", "wb").write(data)
PY
  rm -rf "$tmp"
fi

# wrk for the floors; tcpdump to split each client's overhead into the server's part and its own.
for tool in wrk tcpdump; do
  if ! command -v "$tool" > /dev/null; then
    apt-get install -y -qq "$tool" > /dev/null || (apt-get update -qq && apt-get install -y -qq "$tool" > /dev/null)
  fi
done

# One server thread: the client under test needs the other core (a thread per core would
# have the server's two workers and the client fight over two cores, and hand every
# wake-up across them).
"$SONDE" simulate --listen "127.0.0.1:$PORT" --scenario benches/peers/scenario.toml --seed 1 \
  --threads "${SIM_THREADS:-1}" > /dev/null 2>&1 &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
  sleep 0.1
done

# wrk on the same endpoint: non-streaming (the loopback HTTP limit the issue names), and
# streaming (the same 64-event answer as every client gets, read whole): the server's limit.
floor() {
  local lua
  lua=$(mktemp)
  cat > "$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "zero", "max_tokens": 200, "stream": $1, "messages": [{"role": "user", "content": "Count from 1 to 64, separated by spaces. Output only the numbers."}]}'
LUA
  wrk -t2 -c64 -d10s -s "$lua" "http://127.0.0.1:$PORT/v1/chat/completions" \
    | awk '/Requests\/sec/ {print $2}'
  rm -f "$lua"
}
FLOOR=$(floor false)
echo "wrk non-streaming: $FLOOR req/s" >&2
STREAM_FLOOR=$(floor true)
echo "wrk streaming: $STREAM_FLOOR req/s" >&2

SONDE_VERSION=$("$SONDE" --version | awk '{print $2}') VLLM_VERSION=$VLLM_VERSION \
PYTHONPATH="$VLLM_DIR" "$VENV/bin/python" benches/peers/peers.py \
  --sonde "$SONDE" --config benches/peers/sonde.toml --base-url "http://127.0.0.1:$PORT/v1" \
  --wrk-floor "$FLOOR" --wrk-stream-floor "$STREAM_FLOOR" --seconds "${SECONDS_PER_STEP:-3}"

echo
echo "Waking a task that slept 50 ms, on this machine (\`cargo run --release --example wake_latency\`):"
echo
echo "$WAKE" | sed 's/^/- /'
