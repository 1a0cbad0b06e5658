"""sonde against the Python clients people benchmark LLM APIs with, side by side, in one run.

Started by benches/peers/run.sh, which builds sonde, installs the peers from PyPI into a
virtualenv and starts the simulator (benches/peers/scenario.toml) on 127.0.0.1:18787. Every
client sends the same request: streaming chat completion, "Count from 1 to 64" (64 output
tokens).

- overhead: measured TTFT minus the injected 50 ms (model `fifty`), one request at a time,
  p50 and p99 over --overhead-requests requests;
- capacity: open loop, Poisson arrivals, model `zero` (no injected delay): the highest offered
  rate at which the client completes every request, keeps up (completions within 5 % of the
  offered count per second of schedule) and its p99 TTFT stays within 5 ms of the injected 0.
  TTFT counts from each request's intended send time, for every client alike, so a client that
  falls behind its schedule pays for it. Rates double until the client falls behind, then 3
  bisections narrow each bracket; a failed step gets a second try (see step_verdicts);
- where the overhead goes: tcpdump on the loopback during the overhead runs gives, per request,
  when the request's last packet left the client and when the answer's first token left the
  server (the first server packet at least half the injected delay after the request). The
  server's part (its wake-up to read the request, its timer, its write) is that interval minus
  50 ms; the client's own part is its measured TTFT minus the interval. Needs tcpdump and
  root; left out otherwise;
- floor: wrk on the same endpoint, non-streaming (the loopback HTTP limit of this simulator on
  this machine) and streaming (the same 64-event answer, read whole without parsing: what the
  server side alone sustains).

Peers: the `openai` SDK (AsyncOpenAI, stream=True, TTFT at the first content chunk), and
vLLM's own request function (`async_request_openai_chat_completions` from
vllm/benchmarks/lib/endpoint_request_func.py, taken from the vllm wheel on PyPI by run.sh: the
method `vllm bench serve` uses, aiohttp and time.perf_counter per chunk).
"""

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from urllib.parse import urlsplit

PROMPT = "Count from 1 to 64, separated by spaces. Output only the numbers."
INJECTED_MS = 50.0
WITHIN_MS = 5.0
BISECTIONS = 3


def percentile(values, q):
    """Nearest rank, as sonde's reports."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def offsets(rate, count, seed):
    """Poisson arrivals conditioned on the last at count / rate, as `sonde bench` draws them."""
    rng = random.Random(seed)
    gaps = [rng.expovariate(1.0) for _ in range(count)]
    scale = count / rate / sum(gaps)
    at, out = 0.0, []
    for gap in gaps:
        at += gap
        out.append(at * scale)
    return out


class OpenAISdk:
    name = "openai SDK (async)"

    def __init__(self, base_url):
        import openai

        self.version = openai.__version__
        self.base_url = base_url
        self.client = None

    async def open(self):
        import openai

        self.client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key="unused", max_retries=0
        )

    async def request(self, model, intended):
        """TTFT from `intended` in ms, or None when the request failed."""
        try:
            stream = await self.client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=200,
                stream=True,
                stream_options={"include_usage": True},
            )
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
            return None if first is None else (first - intended) * 1000.0
        except Exception as err:  # noqa: BLE001 - every failure is counted, not raised
            print(f"openai SDK: {err!r}", file=sys.stderr)
            return None

    async def close(self):
        await self.client.close()


class VllmMethod:
    name = "vLLM bench request func"

    def __init__(self, base_url):
        import aiohttp
        import endpoint_request_func as erf

        self.erf = erf
        self.aiohttp = aiohttp
        self.url = base_url + "/chat/completions"
        self.version = os.environ.get("VLLM_VERSION", "?")
        self.session = None

    async def open(self):
        # As `vllm bench serve` sets it up: no connection limit, its long timeout.
        self.session = self.aiohttp.ClientSession(
            connector=self.aiohttp.TCPConnector(limit=0), timeout=self.erf.AIOHTTP_TIMEOUT
        )

    async def request(self, model, intended):
        item = self.erf.RequestFuncInput(
            prompt=PROMPT, api_url=self.url, prompt_len=0, output_len=200, model=model
        )
        out = await self.erf.async_request_openai_chat_completions(item, self.session)
        if not out.success:
            print(f"vLLM method: {out.error[:200]}", file=sys.stderr)
            return None
        # Its TTFT runs from its own start; add how late it started against the schedule.
        return (out.start_time - intended + out.ttft) * 1000.0

    async def close(self):
        await self.session.close()


class Capture:
    """tcpdump of the payload packets to and from the simulator's port, headers only."""

    def __init__(self, port):
        self.port = port
        self.file = tempfile.NamedTemporaryFile(suffix=".pcap", delete=False).name
        self.proc = None

    def start(self):
        """Starts tcpdump and returns once it captures; OSError where it cannot."""
        payload = "(ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) != 0"
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", "96", "-B", "16384", "--immediate-mode", "-U",
             "-w", self.file,
             "--time-stamp-precision=micro", f"tcp port {self.port} and {payload}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on lo" once the capture runs.
        line = self.proc.stderr.readline()
        if "listening" not in line:
            self.proc.wait()
            os.unlink(self.file)
            raise OSError(f"tcpdump did not start: {line.strip()}")

    def stop(self):
        """Lets the last packets land, then stops tcpdump, which flushes its file."""
        time.sleep(0.2)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()

    def exchanges(self):
        """(request's last packet, first token's packet) wall-clock seconds of each request,
        in order."""
        out = subprocess.run(["tcpdump", "-r", self.file, "-n", "-tt",
                              "--time-stamp-precision=micro"],
                             capture_output=True, text=True, check=True).stdout
        os.unlink(self.file)
        server = f".{self.port}"
        asked, found = {}, []
        for line in out.splitlines():
            fields = line.split()
            at, src, dst = float(fields[0]), fields[2], fields[4].rstrip(":")
            if dst.endswith(server):
                # The request's last packet: a client may write its head and body apart, and
                # the server cannot answer before it has both.
                asked[src] = at
            elif dst in asked and at - asked[dst] >= INJECTED_MS / 2000.0:
                found.append((asked.pop(dst), at))
        return found


def split_overhead(sent, exchanges):
    """Pairs each request (wall-clock send time, measured TTFT ms) with the captured exchange
    that started within 20 ms of it (requests are 50 ms apart at least): ([server's part ms],
    [client's part ms])."""
    server, client = [], []
    starts = [ask for ask, _ in exchanges]
    for at, ttft in sent:
        if not starts:
            break
        i = min(range(len(starts)), key=lambda k: abs(starts[k] - at))
        if abs(starts[i] - at) <= 0.020:
            ask, answer = exchanges[i]
            wire = (answer - ask) * 1000.0
            server.append(wire - INJECTED_MS)
            client.append(ttft - wire)
    return server, client


@contextlib.contextmanager
def capture(port):
    """A running Capture of `port`, or None where tcpdump cannot capture (absent, not root)."""
    tap = Capture(port)
    try:
        tap.start()
    except OSError as err:
        print(f"no packet capture: {err}", file=sys.stderr)
        yield None
        return
    try:
        yield tap
    finally:
        tap.stop()


async def closed_one_at_a_time(client, model, count):
    """(wall-clock send time, TTFT ms) of each answered request."""
    sent = []
    for _ in range(count):
        at = time.time()
        got = await client.request(model, time.perf_counter())
        if got is not None:
            sent.append((at, got))
    return sent


async def open_loop(client, model, rate, seconds, seed):
    count = steps(rate, seconds)
    start = time.perf_counter() + 0.05
    tasks = []
    for offset in offsets(rate, count, seed):
        intended = start + offset
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.request(model, intended)))
    results = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return count, [r for r in results if r is not None], elapsed


def sonde_bench(args, model, extra):
    """The bench's summary of the target, its TTFT figures, and (wall-clock start, TTFT ms)
    of each ok run from results.csv."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.sonde, "bench", "--config", args.config, "--target", f"sim/{model}",
               "--probe", "count64", "--out", out, "--seed", "7", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode not in (0, 1):
            sys.exit(f"sonde bench failed: {done.stderr}")
        with open(os.path.join(out, "summary.json")) as f:
            target = json.load(f)["targets"][0]
        with open(os.path.join(out, "results.csv"), newline="") as f:
            sent = [(datetime.fromisoformat(row["ts"].replace("Z", "+00:00")).timestamp(),
                     float(row["ttft_ms"]))
                    for row in csv.DictReader(f) if row["outcome"] == "ok"]
    return target, target["latency"]["ttft_ms"], sent


def steps(rate, seconds):
    """Requests of one sweep step: `seconds` of the rate, and at least 100 so that a p99 is
    a p99 and not the maximum of a handful."""
    return max(100, int(rate * seconds))


def judge(rate, offered, completed, p99, elapsed):
    """(tight, kept_up): kept up = every request answered, the last within 5 % (+0.5 s) of the
    schedule's end; tight = kept up with the p99 TTFT within 5 ms of the injected 0."""
    scheduled = offered / rate
    kept_up = completed == offered and elapsed <= scheduled * 1.05 + 0.5
    return kept_up and p99 is not None and p99 <= WITHIN_MS, kept_up


def judged(name, rate, offered, completed, p99, elapsed):
    """judge's verdicts and the progress line that says them."""
    verdicts = judge(rate, offered, completed, p99, elapsed)
    word = "tight" if verdicts[0] else "kept up" if verdicts[1] else "fell behind"
    p99_text = "–" if p99 is None else f"{p99:.3f}"
    return verdicts, (f"  {name} @ {rate}/s: ok {completed}/{offered}, p99 {p99_text} ms, "
                      f"{elapsed:.2f} s -> {word}")


def step_verdicts(measure, rate):
    """(tight, kept_up) at `rate`. A verdict that fails is measured once more and passes if
    either try passed: one stall of a shared host spoils the p99 of a 3 s step, and the first
    failure bounds the sweep. Every client gets the same second chance."""
    verdicts, line = measure(rate)
    print(line, file=sys.stderr, flush=True)
    if all(verdicts):
        return verdicts
    again, line = measure(rate)
    print(line + " (second try)", file=sys.stderr, flush=True)
    return tuple(first or second for first, second in zip(verdicts, again))


def sweep(measure, start_rate, limit_rate, refine=BISECTIONS):
    """Doubles the rate until the client no longer keeps up, then narrows each verdict's
    bracket [highest pass, lowest fail] by `refine` geometric bisections (a factor of 2 becomes
    2^(1/2^refine): 9 % with 3). Returns (highest tight rate, highest kept-up rate)."""
    best = [None, None]
    failed = [None, None]
    rate = start_rate
    while rate <= limit_rate:
        verdicts = step_verdicts(measure, rate)
        for i, ok in enumerate(verdicts):
            if ok and failed[i] is None:
                best[i] = rate
            elif not ok and failed[i] is None:
                failed[i] = rate
        if failed[1] is not None:
            break
        rate *= 2
    for i in (0, 1):
        for _ in range(refine):
            if best[i] is None or failed[i] is None:
                break
            mid = round(math.sqrt(best[i] * failed[i]))
            if mid in (best[i], failed[i]):
                break
            if step_verdicts(measure, mid)[i]:
                best[i] = mid
            else:
                failed[i] = mid
    return tuple(best)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sonde", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--wrk-floor", type=float, required=True)
    parser.add_argument("--wrk-stream-floor", type=float, required=True)
    parser.add_argument("--overhead-requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-rate", type=float, default=51200)
    args = parser.parse_args()

    rows = []
    port = urlsplit(args.base_url).port
    splits = []

    # sonde
    with capture(port) as tap:
        _, ttft, sent = sonde_bench(
            args, "fifty", ["--concurrency", "1", "--requests", str(args.overhead_requests)])
    sonde_overhead = (ttft["p50"] - INJECTED_MS, ttft["p99"] - INJECTED_MS)
    splits.append(("sonde (Rust)", tap and tap.exchanges(), sent))

    def sonde_step(rate):
        count = steps(rate, args.seconds)
        target, ttft, _ = sonde_bench(
            args, "zero", ["--rate", str(rate), "--requests", str(count)])
        return judged("sonde", rate, count, target["ok"], ttft.get("p99"), target["elapsed_s"])

    print("sonde: capacity sweep", file=sys.stderr)
    sonde_capacity, sonde_kept_up = sweep(sonde_step, 100, args.max_rate)
    rows.append(("sonde (Rust)", os.environ.get("SONDE_VERSION", ""), sonde_overhead,
                 sonde_capacity, sonde_kept_up))

    for make in (OpenAISdk, VllmMethod):
        try:
            client = make(args.base_url)
        except ImportError as err:
            print(f"{make.name}: not installed ({err}); left out", file=sys.stderr)
            continue

        loop = asyncio.new_event_loop()
        loop.run_until_complete(client.open())
        with capture(port) as tap:
            sent = loop.run_until_complete(closed_one_at_a_time(client, "fifty",
                                                                args.overhead_requests))
        ttfts = [ttft for _, ttft in sent]
        over = (percentile(ttfts, 0.5) - INJECTED_MS, percentile(ttfts, 0.99) - INJECTED_MS)
        splits.append((client.name, tap and tap.exchanges(), sent))

        def step(rate, client=client, loop=loop):
            offered, got, elapsed = loop.run_until_complete(
                open_loop(client, "zero", rate, args.seconds, 7))
            p99 = percentile(got, 0.99) if got else None
            return judged(client.name, rate, offered, len(got), p99, elapsed)

        print(f"{client.name}: capacity sweep", file=sys.stderr)
        capacity, kept_up = sweep(step, 5, args.max_rate)
        loop.run_until_complete(client.close())
        loop.close()
        rows.append((client.name, client.version, over, capacity, kept_up))

    floor, stream_floor = args.wrk_floor, args.wrk_stream_floor
    print()
    print("| client | version | TTFT overhead p50 | p99 | capacity: p99 TTFT ≤ 5 ms (req/s) "
          "| sonde ÷ client | ÷ HTTP floor | ÷ streaming floor | keeps up, any TTFT (req/s) "
          "| sonde ÷ client |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def ratio(mine, theirs):
        return f"{mine / theirs:.1f}×" if mine and theirs else "–"

    for name, version, (p50, p99), capacity, kept_up in rows:
        floor_ratio = f"{capacity / floor:.3f}" if capacity else "–"
        stream_ratio = f"{capacity / stream_floor:.2f}" if capacity else "–"
        print(f"| {name} | {version} | {p50:.2f} ms | {p99:.2f} ms | {capacity or 'none'} "
              f"| {ratio(sonde_capacity, capacity)} | {floor_ratio} | {stream_ratio} "
              f"| {kept_up or 'none'} | {ratio(sonde_kept_up, kept_up)} |")
    print(f"| wrk, non-streaming | | | | {floor:.0f} | | 1 | | | |")
    print(f"| wrk, streaming (64 events, read whole) | | | | {stream_floor:.0f} | | | 1 | | |")

    print()
    if any(exchanges is None for _, exchanges, _ in splits):
        print("Where the overhead goes: not measured (needs tcpdump, run as root).")
        return
    print("Where the overhead goes (tcpdump on lo, same runs as the overhead above): the "
          "server's part is first token sent − request sent (its last packet) − 50 ms; the "
          "client's own part is its measured TTFT − (first token sent − request sent).")
    print()
    print("| client | requests matched | server's part p50 | p99 | client's own part p50 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, exchanges, sent in splits:
        server, own = split_overhead(sent, exchanges)
        if not own:
            print(f"| {name} | 0 of {len(sent)} | | | | |")
            continue
        print(f"| {name} | {len(own)} of {len(sent)} | {percentile(server, 0.5):.2f} ms "
              f"| {percentile(server, 0.99):.2f} ms | {percentile(own, 0.5):.2f} ms "
              f"| {percentile(own, 0.99):.2f} ms |")


if __name__ == "__main__":
    main()
