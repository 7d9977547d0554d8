"""Serving benchmark: cache-hit and cache-miss latency through the gateway, and its overhead.

Deployment measured (each a separate process, loopback gRPC, as in production):
``tandem serve sparse`` (real Lucene BM25 over the Home Depot catalog), with ``--model DIR``
also ``tandem serve generative`` (a trained model folder) ← ``tandem serve gateway``
(validation, cache, intents, fusion, titles) ← N concurrent asyncio clients in this process.

* hit: a small set of queries is warmed, then requests cycle over it (every one a hit);
* miss: every request is a distinct real query (train + dev queries, de-duplicated);
* gateway overhead = gateway miss p50 − p50 of the same queries sent straight to the
  slowest retriever service with the same ``k``, all interleaved request by request so
  that they see the same background load;
* ``miss_qps`` is concurrency / mean miss latency (the phases are interleaved, so wall time
  is shared with the direct calls).

What item scores + learned fusion add per search on the full catalog (issue 18's <= 5 ms
p50 at 200 candidates) is measured in-process by ``bench.fusion_scores``.

``python -m bench.serve [--quick] --out FILE.json`` prints a table and writes
``{"figures": {...}, "config": {...}}``. ``--quick`` uses a 5,000-item slice of the catalog
and fewer requests (under a minute on 2 cores, index build included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tandem.catalog.datasets import data_root

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root("homedepot")  # TANDEM_DATA, else ../shared/data
WORK = Path(os.environ.get("TANDEM_HOME", ROOT / ".tandem")) / "bench" / "serve"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _queries() -> list[str]:
    """Distinct (after normalisation) train + dev queries, in file order."""
    from tandem.cache import normalize_query

    seen: dict[str, str] = {}
    for split in ("dev", "train"):
        for line in (DATA / f"queries.{split}.tsv").read_text(encoding="utf-8").splitlines():
            _, _, text = line.partition("\t")
            key = normalize_query(text).lower()
            if key and key not in seen:
                seen[key] = text
    return list(seen.values())


def _prepare(n_items: int | None) -> tuple[Path, Path]:
    """The catalog slice as Item JSONL and its Lucene index (built once, reused by later runs)."""
    from tandem.catalog.item import Item

    name = f"items-{n_items or 'all'}"
    catalog, index = WORK / f"{name}.jsonl", WORK / f"{name}.index"
    if not catalog.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        items = []
        with (DATA / "products.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                items.append(Item.model_validate_json(line))
                if n_items and len(items) == n_items:
                    break
        tmp = catalog.with_suffix(".tmp")
        tmp.write_text("".join(i.model_dump_json(exclude_none=True) + "\n" for i in items), encoding="utf-8")
        tmp.rename(catalog)
    if not (index / "tandem-index.json").exists():  # the marker build_index writes last
        from tandem.jvm import ensure_jvm

        ensure_jvm()
        from tandem.catalog.item import Item as _Item
        from tandem.sparse import build_index

        with catalog.open(encoding="utf-8") as fh:
            build_index((_Item.model_validate_json(line) for line in fh), index)
    return catalog, index


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from tandem_app.cli import main; main()", "serve", *args, "--log-level", "WARNING"]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server at {address} exited with {proc.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise TimeoutError(f"server at {address} not serving after {timeout_s} s")


async def _load(address: str, make_request, n_requests: int, concurrency: int, method: str,
                request_cls, response_cls) -> tuple[list[float], int, float]:
    """Send ``n_requests`` from ``concurrency`` tasks; returns latencies (s), errors, wall time."""
    import grpc

    latencies: list[float] = []
    errors = 0
    counter = iter(range(n_requests))
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                request = make_request(i)
                started = time.perf_counter()
                try:
                    await call(request, timeout=10)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - started
    return latencies, errors, wall


async def _paired(gateway: str, direct: dict[str, str], queries: list[str], concurrency: int
                  ) -> tuple[tuple[list[float], int], dict[str, tuple[list[float], int]]]:
    """Each query once through the gateway (a miss) and once straight to every retriever
    service in ``direct`` (name → address), interleaved (rotating which goes first), so all
    see the same background load — this machine is shared, and comparing phases run
    minutes apart measures the neighbours."""
    import grpc

    from tandem.v1 import retriever_pb2, search_pb2

    gw_lat: list[float] = []
    direct_lat: dict[str, list[float]] = {name: [] for name in direct}
    errors = {"gw": 0, **dict.fromkeys(direct, 0)}
    counter = iter(range(len(queries)))
    channels = {name: grpc.aio.insecure_channel(addr) for name, addr in direct.items()}
    async with grpc.aio.insecure_channel(gateway) as gch:
        search = gch.unary_unary("/tandem.v1.SearchService/Search",
                                 request_serializer=search_pb2.SearchRequest.SerializeToString,
                                 response_deserializer=search_pb2.SearchResponse.FromString)
        retrieve = {name: ch.unary_unary("/tandem.v1.RetrieverService/Retrieve",
                                         request_serializer=retriever_pb2.RetrieveRequest.SerializeToString,
                                         response_deserializer=retriever_pb2.RetrieveResponse.FromString)
                    for name, ch in channels.items()}

        async def timed(call, request, sink: list[float], name: str) -> None:
            started = time.perf_counter()
            try:
                await call(request, timeout=10)
            except grpc.RpcError:
                errors[name] += 1
                return
            sink.append(time.perf_counter() - started)

        async def worker() -> None:
            for i in counter:
                steps = [(search, search_pb2.SearchRequest(query=queries[i], top_k=10), gw_lat, "gw")]
                steps += [(retrieve[name], retriever_pb2.RetrieveRequest(queries=[queries[i]], k=100, source=name),
                           direct_lat[name], name) for name in direct]
                shift = i % len(steps)
                for step in steps[shift:] + steps[:shift]:
                    await timed(*step)

        try:
            await asyncio.gather(*[worker() for _ in range(concurrency)])
        finally:
            for ch in channels.values():
                await ch.close()
    return (gw_lat, errors["gw"]), {name: (direct_lat[name], errors[name]) for name in direct}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc): unlike latency, this does
    not depend on what else runs on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1000


def run(quick: bool, concurrency: int, redis_url: str | None, model: Path | None = None,
        all_in_one: bool = False) -> tuple[dict, dict]:
    from tandem.v1 import retriever_pb2, search_pb2

    n_items = 5000 if quick else None
    n_hit = 2000 if quick else 10_000
    n_miss = 1000 if quick else 5000
    hot_set = 100
    catalog, index = _prepare(n_items)
    queries = _queries()
    n_miss = min(n_miss, len(queries) - hot_set)
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sparse_port, gen_port, gw_port = _free_port(), _free_port(), _free_port()
    direct = {"bm25": f"127.0.0.1:{sparse_port}"}
    procs = []
    try:
        if all_in_one:  # one process: its RetrieverService is the direct path, SearchService the gateway
            gw_args = ["--all-in-one", "--index", str(index), "--catalog", str(catalog), "--port", str(gw_port)]
            if model is not None:
                gw_args += ["--model", str(model)]
            direct = {"bm25": f"127.0.0.1:{gw_port}"} | ({"generative": f"127.0.0.1:{gw_port}"} if model else {})
        else:
            procs.append(_spawn(["sparse", "--index", str(index), "--port", str(sparse_port)], logs / "sparse.log"))
            _wait_serving(f"127.0.0.1:{sparse_port}", procs[-1])
            gw_args = ["gateway", "--sparse", f"127.0.0.1:{sparse_port}", "--catalog", str(catalog),
                       "--port", str(gw_port)]
            if model is not None:
                procs.append(_spawn(["generative", "--model", str(model), "--port", str(gen_port)],
                                    logs / "generative.log"))
                direct["generative"] = f"127.0.0.1:{gen_port}"
                _wait_serving(direct["generative"], procs[-1])
                gw_args += ["--generative", direct["generative"]]
        if redis_url:
            gw_args += ["--redis-url", redis_url]
        env_redis = os.environ.pop("TANDEM_REDIS_URL", None)  # the gateway's cache is what --redis-url says
        procs.append(_spawn(gw_args, logs / "gateway.log"))
        if env_redis is not None:
            os.environ["TANDEM_REDIS_URL"] = env_redis
        gateway = f"127.0.0.1:{gw_port}"
        _wait_serving(gateway, procs[-1])
        gw_pid = procs[-1].pid
        cpu: dict[str, float] = {}

        search = "/tandem.v1.SearchService/Search"
        retrieve = "/tandem.v1.RetrieverService/Retrieve"
        hot, cold = queries[:hot_set], queries[hot_set:hot_set + n_miss]
        warm = [search_pb2.SearchRequest(query=q, top_k=10) for q in hot]

        async def phases():
            # Warm-up: JIT, channels, and the hot set into the cache.
            await _load(gateway, lambda i: warm[i % hot_set], hot_set * 2, concurrency, search,
                        search_pb2.SearchRequest, search_pb2.SearchResponse)
            await _load(direct["bm25"],
                        lambda i: retriever_pb2.RetrieveRequest(queries=[queries[-1 - i]], k=100, source="bm25"),
                        200, concurrency,
                        retrieve, retriever_pb2.RetrieveRequest, retriever_pb2.RetrieveResponse)
            cpu0 = _cpu_s(gw_pid)
            hit = await _load(gateway, lambda i: warm[i % hot_set], n_hit, concurrency, search,
                              search_pb2.SearchRequest, search_pb2.SearchResponse)
            cpu1 = _cpu_s(gw_pid)
            miss, per_source = await _paired(gateway, direct, cold, concurrency)
            cpu["hit"] = (cpu1 - cpu0) / n_hit
            cpu["miss"] = (_cpu_s(gw_pid) - cpu1) / len(cold)
            return hit, miss, per_source

        (hit_lat, hit_err, hit_wall), (miss_lat, miss_err), per_source = asyncio.run(phases())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    ret_p50 = {name: _pct(lat, 0.50) for name, (lat, _) in per_source.items()}
    slowest = max(ret_p50, key=ret_p50.get)
    figures = {
        "hit_p50_ms": _pct(hit_lat, 0.50),
        "hit_p99_ms": _pct(hit_lat, 0.99),
        "hit_qps": len(hit_lat) / hit_wall,
        "miss_p50_ms": _pct(miss_lat, 0.50),
        "miss_p99_ms": _pct(miss_lat, 0.99),
        "miss_qps": concurrency / statistics.fmean(miss_lat) if miss_lat else 0.0,
        **{f"{name}_p50_ms": v for name, v in ret_p50.items()},
        "gateway_overhead_ms": _pct(miss_lat, 0.50) - ret_p50[slowest],
        "gateway_cpu_ms_per_hit": cpu["hit"] * 1000,
        "gateway_cpu_ms_per_miss": cpu["miss"] * 1000,
        "errors": hit_err + miss_err + sum(err for _, err in per_source.values()),
        "requests": n_hit + n_miss,
    }
    config = {"items": n_items or "all", "hit_requests": n_hit, "miss_requests": n_miss, "concurrency": concurrency,
              "cache": "redis" if redis_url else "lru", "sources": list(direct), "slowest_source": slowest,
              "candidates_k": 100, "model": str(model) if model else None,
              "deployment": "all-in-one" if all_in_one else "separate processes",
              "mean_miss_ms": statistics.fmean(miss_lat) * 1000 if miss_lat else None}
    return figures, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 items, 3,000 requests (under a minute)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="concurrent client tasks (the load generator shares the cores with the servers)")
    parser.add_argument("--redis-url", default=None, help="use this Redis as the gateway cache (default: LRU)")
    parser.add_argument("--model", type=Path, default=None,
                        help="also serve this generative model folder (`tandem serve generative`) behind the gateway")
    parser.add_argument("--all-in-one", action="store_true",
                        help="one `tandem serve --all-in-one` process (the embedded default) instead of separate "
                             "sparse/generative/gateway processes; direct calls go to its RetrieverService")
    args = parser.parse_args()
    figures, config = run(args.quick, args.concurrency, args.redis_url, args.model, args.all_in_one)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench.serve ({'quick' if args.quick else 'full'}; {config['items']} items, "
                        f"{config['concurrency']} clients, cache {config['cache']}, {config['deployment']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    main()
