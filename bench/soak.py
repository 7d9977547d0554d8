"""Soak test: the all-in-one server under a fixed request rate for minutes — errors, latency,
memory growth and file descriptors of the server process.

Deployment measured: ``tandem serve --all-in-one`` in a child process (real Lucene BM25 over
a 5,000-item Home Depot slice, the same slice and index ``bench.serve --quick`` uses; a
term-overlap generative source; in-process LRU cache), searched over loopback gRPC by an
open-loop load generator in this process: request *i* is sent at ``start + i / rate``
whatever happened to earlier ones, so a slow server shows as latency (and as errors once
``--max-outstanding`` requests are pending), not as a silently lower rate. Queries cycle
over the distinct train + dev queries, so the run mixes cache misses and, after the first
pass, hits.

Figures: ``errors`` (failed or dropped requests; ``empty_answers`` counts successful answers
with no hit — real queries that match nothing in the slice — separately), ``p50_ms``/``p99_ms`` (over the whole
run), ``rss_growth_pct`` = growth of the server's resident memory from the end of the
warm-up (the first 20 % of the run, at least 5 s: JIT, caches, allocator pools fill) to the
end, comparing the median of the first and of the last 10 % of 1 Hz samples (one sample
would be noise), ``fds_start``/``fds_end`` = open file descriptors of the server at those
two points.

``python -m bench.soak [--quick] [--seconds N] [--rate R] --out FILE.json`` prints a table
and writes ``{"figures": {...}, "config": {...}}``. Default 300 s at 20 requests/s (the machine this was written on has 2 shared cores);
``--quick`` 30 s — a smoke run: after its 6 s warm-up the server's JVM heap is still
growing, so its ``rss_growth_pct`` (17.7 % in one run) says nothing about leaks; the 5-minute
run's (2.2 %) does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Samples the server's RSS and open file descriptors once a second in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), _rss_kib(self.pid), _fds(self.pid)))
            except (OSError, RuntimeError):
                return  # the server exited; the run reports it
            self._stop.wait(1.0)

    def start(self) -> Sampler:
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)


async def _open_loop(address: str, queries: list[str], rate: float, seconds: float, max_outstanding: int,
                     timeout_s: float) -> tuple[list[float], int, int, int]:
    """Send ``rate`` requests per second for ``seconds``; returns (latencies s, errors, empty answers, sent)."""
    import grpc

    from tandem.v1 import search_pb2

    latencies: list[float] = []
    errors = empty = 0
    outstanding = 0
    tasks: set[asyncio.Task] = set()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/tandem.v1.SearchService/Search",
                                   request_serializer=search_pb2.SearchRequest.SerializeToString,
                                   response_deserializer=search_pb2.SearchResponse.FromString)

        async def one(i: int) -> None:
            nonlocal errors, empty, outstanding
            started = time.perf_counter()
            try:
                reply = await call(search_pb2.SearchRequest(query=queries[i % len(queries)], top_k=10),
                                   timeout=timeout_s)
                latencies.append(time.perf_counter() - started)
                if not reply.hits:
                    empty += 1  # a real query with no match in the 5,000-item slice: an answer, not an error
            except grpc.RpcError:
                errors += 1
            finally:
                outstanding -= 1

        t0 = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= max_outstanding:
                errors += 1  # the server is this far behind: count the request as failed, do not queue it
                continue
            outstanding += 1
            task = asyncio.ensure_future(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return latencies, errors, empty, n


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] * 1000


def run(seconds: float, rate: float, max_outstanding: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the server, run the load, measure; returns (figures, config)."""
    from bench.serve import WORK, _prepare, _queries, _wait_serving
    from tandem_testing.infra import free_port

    catalog, index = _prepare(5000)
    queries = _queries()
    port = free_port()
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", "from tandem_app.cli import main; main()", "serve", "--all-in-one",
           "--index", str(index), "--catalog", str(catalog),
           "--generative-factory", "tandem_testing.term_overlap:from_jsonl", "--generative-arg", str(catalog),
           "--port", str(port), "--log-level", "WARNING"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_REDIS_URL"}  # the in-process LRU cache
    proc = subprocess.Popen(cmd, stdout=(logs / "soak.log").open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    address = f"127.0.0.1:{port}"
    try:
        _wait_serving(address, proc)
        sampler = Sampler(proc.pid).start()
        started = time.monotonic()
        latencies, errors, empty, sent = asyncio.run(_open_loop(address, queries, rate, seconds, max_outstanding, 5.0))
        wall = time.monotonic() - started
        sampler.stop()
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    warm_end = started + max(5.0, 0.2 * seconds)
    steady = [s for s in sampler.samples if s[0] >= warm_end]
    if len(steady) < 4:
        raise RuntimeError(f"only {len(steady)} memory samples after the warm-up; run longer (--seconds)")
    tenth = max(1, len(steady) // 10)
    rss_start = statistics.median(s[1] for s in steady[:tenth])
    rss_end = statistics.median(s[1] for s in steady[-tenth:])
    figures = {
        "requests": sent,
        "errors": errors + (0 if alive else 1),
        "empty_answers": empty,
        "p50_ms": round(_pct(latencies, 0.50), 2),
        "p99_ms": round(_pct(latencies, 0.99), 2),
        "achieved_rps": round(len(latencies) / wall, 1),
        "rss_start_mib": round(rss_start / 1024, 1),
        "rss_end_mib": round(rss_end / 1024, 1),
        "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2),
        "fds_start": steady[0][2],
        "fds_end": steady[-1][2],
    }
    config = {"seconds": seconds, "rate_rps": rate, "max_outstanding": max_outstanding, "items": 5000,
              "queries": len(queries), "warmup_s": round(warm_end - started, 1), "samples": len(sampler.samples),
              "server": "tandem serve --all-in-one (bm25 Lucene + term-overlap generative, LRU cache)"}
    return figures, config


def main() -> None:
    """Parse arguments, run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s instead of 300 s")
    parser.add_argument("--seconds", type=float, default=None, help="run length (default 300, or 30 with --quick)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (open loop)")
    parser.add_argument("--max-outstanding", type=int, default=64, help="pending requests before new ones fail")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    args = parser.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 300.0)
    if seconds < 10 or args.rate <= 0:
        parser.error("`--seconds` must be >= 10 and `--rate` > 0")
    figures, config = run(seconds, args.rate, args.max_outstanding)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench.soak ({seconds:.0f} s at {args.rate:.0f} req/s, all-in-one server)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, str(v))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    main()
