# Sourced by the bench scripts: a release build, a work folder removed on exit, and
# `start_simulator PORT` serving a zero-delay scenario (16-token answers) until exit.
work=$(mktemp -d)
sim_pid=""
trap 'kill "$sim_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet

start_simulator() {
  printf '[default]\noutput_tokens = 16\n' > "$work/zero.toml"
  target/release/sonde simulate --listen "127.0.0.1:$1" --scenario "$work/zero.toml" --seed 1 \
    > "$work/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 1 50); do
    if curl -sf "http://127.0.0.1:$1/healthz" > /dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "the simulator did not start on port $1" >&2
  exit 1
}
