"""Canary and A/B benchmark (issue 21): simulated users click through the real gateway, their
feedback travels through the real Kafka topic, and the canary controller acts on it.

``python -m bench.canary [--quick] --out FILE.json`` on the Home Depot data
(``../shared/data/homedepot``): a BM25 index of the catalog (``--quick``: every item judged
for a dev query plus 6,000 others), a private Kafka broker (``tandem_testing.infra``), the
gateway (``gateway_server``: SearchService with two arms + FeedbackService onto
``tandem.feedback``) on loopback, and ``tandem stream feedback``'s consumer replaying the
topic into a feedback store. Load: 4 client threads, dev queries drawn at random, users from
a pool of 20,000, every request's feedback (an impression per shown hit, then the clicks)
sent to ``FeedbackService``.

**Click model** (seeded cascade over the graded labels, 0..6; unjudged = 0): the user scans the
top 10 in order; at a hit of grade ``g`` they click with probability ``max(0.02, 0.9 g / 6)``;
after a click they stop with probability 0.6 (satisfied), after a hit without a click they go
on with probability 0.8 (patience). So a ranking that puts relevant items lower gets fewer
clicks, and in an interleaved list the better team's items get clicked first.

**Arms** (real rankers): BM25 (Pyserini through :class:`tandem.sparse.SparseRetriever`) and
"BM25 with its top 10 shuffled" (seeded per query; same items, worse order). The *worse*
scenario serves BM25 as current and the shuffled one as candidate; the *better* scenario
swaps them (the shuffled ranker standing in for an older, weaker current: no cheaper real
ranker that beats BM25 on this set is available without training a model).

Figures: ``split_queries_to_detect`` (50/50 split, two-proportion z-test of query CTR, p < 0.05,
checked every 50 queries) and ``interleaving_queries_to_detect`` (every query interleaved, sign
test on per-query preferences, p < 0.05, checked every 25 queries), both with the worse
candidate; then a canary run per scenario (stages 1% → 10% → 50% → 100%, interleaving mode,
alpha 0.01): ``worse_rolled_back_at_share`` and ``better_final_share``; ``failed_requests``
counts every failed Search or Record call over the whole run, while shares change under load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tandem.retriever import Hit, Retriever

SEED = 2104


class ShuffledTop10(Retriever):
    """``inner``'s lists with the first 10 hits shuffled (seeded by the query): a worse ranking."""

    def __init__(self, inner: Retriever) -> None:
        self.inner, self.name = inner, inner.name

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        out = []
        for q, hits in zip(queries, self.inner.retrieve(queries, k), strict=True):
            top = list(hits[:10])
            random.Random(int(hashlib.blake2b(q.encode(), digest_size=8).hexdigest(), 16)).shuffle(top)
            out.append([Hit(h.item_id, s.score, h.source) for h, s in zip(top, hits[:10], strict=True)] + list(hits[10:]))
        return out

    def version(self) -> str:
        return self.inner.version() + "+shuffled10"


def cascade_clicks(grades: Sequence[int], rng: random.Random) -> list[int]:
    """0-based positions clicked under the module's cascade model."""
    clicks = []
    for pos, g in enumerate(grades[:10]):
        if rng.random() < max(0.02, 0.9 * g / 6):
            clicks.append(pos)
            if rng.random() < 0.6:
                break
        elif rng.random() >= 0.8:
            break
    return clicks


class Load:
    """Simulated users against the gateway; counts failures."""

    def __init__(self, address: str, queries: list[tuple[str, str]], qrels: dict[str, dict[str, int]]) -> None:
        import grpc

        from tandem.v1 import feedback_pb2_grpc, search_pb2_grpc

        self.channel = grpc.insecure_channel(address)
        self.search = search_pb2_grpc.SearchServiceStub(self.channel)
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self.channel)
        self.queries, self.qrels = queries, qrels
        self.failed = 0
        self.sent_events = 0
        self.served = 0
        self._n = 0
        self._mu = threading.Lock()
        self._pool = ThreadPoolExecutor(4)

    def _one(self, n: int) -> None:
        import grpc

        from tandem.v1 import feedback_pb2, search_pb2

        rng = random.Random(SEED * 1_000_003 + n)
        qid, text = rng.choice(self.queries)
        user = f"u{rng.randrange(20_000)}"
        try:
            reply = self.search.Search(search_pb2.SearchRequest(query=text, user_id=user, top_k=10), timeout=10)
            grades = [self.qrels.get(qid, {}).get(h.item_id, 0) for h in reply.hits]
            now = time.time()
            events = [feedback_pb2.FeedbackEvent(request_id=reply.request_id, user_id=user, item_id=h.item_id,
                                                 kind="impression", position=i + 1, ts=now, arm=h.arm)
                      for i, h in enumerate(reply.hits)]
            events += [feedback_pb2.FeedbackEvent(request_id=reply.request_id, user_id=user,
                                                  item_id=reply.hits[p].item_id, kind="click", position=p + 1,
                                                  ts=now + 0.001 * (p + 1), arm=reply.hits[p].arm)
                       for p in cascade_clicks(grades, rng)]
            if events:
                self.feedback.Record(feedback_pb2.RecordRequest(events=events), timeout=30)
            with self._mu:
                self.sent_events += len(events)
                self.served += 1
        except grpc.RpcError:
            with self._mu:
                self.failed += 1

    def run(self, n: int) -> None:
        """Send ``n`` more queries (4 at a time) and wait for them."""
        start, self._n = self._n, self._n + n
        list(self._pool.map(self._one, range(start, start + n)))

    def close(self) -> None:
        self._pool.shutdown()
        self.channel.close()


def _wait_for(store: Any, load: Load, timeout_s: float = 60.0) -> None:
    """Until every event sent so far is in the store (through Kafka and the consumer)."""
    deadline = time.monotonic() + timeout_s
    while store.counts()["events"] < load.sent_events:
        if time.monotonic() > deadline:
            raise SystemExit(f"feedback did not arrive: {store.counts()['events']} of {load.sent_events} events")
        time.sleep(0.05)


def _detect(load: Load, store: Any, arms: Any, mode: str, step: int, cap: int) -> int | None:
    """Queries until the worse candidate is significantly worse (p < 0.05), or ``None`` by ``cap``."""
    from tandem.canary import CANDIDATE, CURRENT, read_evidence
    from tandem.canary.stats import sign_test, two_proportion_test

    arms.set_plan(0.5 if mode == "split" else 1.0, mode)
    since, sent = store.seq, 0
    while sent < cap:
        load.run(step)
        sent += step
        _wait_for(store, load)
        ev = read_evidence(store, since)
        if mode == "split":
            z, p = two_proportion_test(ev.clicked[CURRENT], ev.requests[CURRENT], ev.clicked[CANDIDATE],
                                       ev.requests[CANDIDATE])
            if z < 0 and p < 0.05:
                return sent
        elif ev.current_wins > ev.candidate_wins and sign_test(ev.candidate_wins, ev.current_wins) < 0.05:
            return sent
    return None


def _canary(load: Load, store: Any, arms: Any, policy: Any, batch: int, cap: int) -> tuple[Any, int]:
    from tandem.canary import CanaryController, read_evidence

    ctl = CanaryController(policy, arms, lambda since: read_evidence(store, since), lambda: store.seq)
    ctl.start()
    sent = 0
    while not ctl.done and sent < cap:
        load.run(batch)
        sent += batch
        _wait_for(store, load)
        ctl.step()
    return ctl.outcome, sent


def main() -> None:
    """Run the benchmark, print the figures, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a 6,000-item index plus the judged items")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    import logging

    from tandem.canary import Arms, CanaryPolicy
    from tandem.catalog import read_queries
    from tandem.catalog.datasets import data_root
    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels
    from tandem.feedback.store import FeedbackStore
    from tandem.feedback.stream import KafkaFeedbackSink, feedback_consumer
    from tandem.search.orchestrator import HybridSearcher
    from tandem.search.request import SearchConfig
    from tandem.sparse import SparseConfig, SparseRetriever, build_index
    from tandem.streams.config import StreamSettings
    from tandem_testing.infra import KafkaBroker
    from tandem_services.app import gateway_server
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    data = data_root("homedepot")
    qrels = {q: dict(d) for q, d in read_qrels(data / "qrels.dev.txt").items()}
    queries = [(q, t) for q, t in read_queries(data / "queries.dev.tsv").items() if q in qrels]
    items = load_items(data / "products.jsonl").items
    if args.quick:
        judged = {d for docs in qrels.values() for d in docs}
        rest = [it for it in items if it.item_id not in judged]
        items = [it for it in items if it.item_id in judged] + random.Random(SEED).sample(rest, 6_000)
    figures: dict[str, Any] = {"items": len(items), "queries_pool": len(queries)}

    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp, KafkaBroker() as broker:
        tmpdir = Path(tmp)
        build_index(items, tmpdir / "index", SparseConfig(index_threads=2))
        bm25 = SparseRetriever(tmpdir / "index", writable=False)
        settings = StreamSettings(kafka_bootstrap=broker.bootstrap, home=tmpdir)
        store = FeedbackStore(tmpdir / "feedback.sqlite")
        consumer = feedback_consumer(store, settings)
        worker = threading.Thread(target=consumer.run, name="feedback-replay", daemon=True)
        worker.start()
        policy = CanaryPolicy(mode="interleave", min_requests=10, min_quality=20, alpha=0.01)
        figures["policy"] = policy.model_dump()
        scenarios = {"worse": (bm25, ShuffledTop10(bm25)), "better": (ShuffledTop10(bm25), bm25)}
        totals = {"failed": 0, "served": 0}
        for name, (current, candidate) in scenarios.items():
            arms = Arms()
            cfg = SearchConfig(deadline_s=5.0)
            server = BackgroundServer(lambda c=current, d=candidate, a=arms, cfg=cfg: gateway_server(  # type: ignore[misc]
                HybridSearcher([c], config=cfg), ServerOptions(drain_s=0, grace_s=1), candidate=HybridSearcher(
                    [d], config=cfg), arms=a, feedback=KafkaFeedbackSink(settings)))
            with server as srv:
                load = Load(srv.address, queries, qrels)
                if name == "worse":
                    figures["split_queries_to_detect"] = _detect(load, store, arms, "split", 50, 3000)
                    figures["interleaving_queries_to_detect"] = _detect(load, store, arms, "interleave", 25, 2000)
                outcome, sent = _canary(load, store, arms, policy, batch=200, cap=20_000)
                figures[f"{name}_canary_queries"] = sent
                figures[f"{name}_decisions"] = [f"{d.action} {d.share:g}: {d.reason}" for d in outcome.decisions]
                if name == "worse":
                    figures["worse_rolled_back_at_share"] = outcome.rolled_back_at
                else:
                    figures["better_final_share"] = outcome.final_share
                figures[f"{name}_candidate_errors_in_last_stage"] = arms.windows()["candidate"].errors
                totals["failed"] += load.failed
                totals["served"] += load.served
                load.close()
            print(f"{name}: {figures[f'{name}_decisions'][-1]}", flush=True)
        consumer.stop()
        worker.join(timeout=30)
        figures["failed_requests"] = totals["failed"]
        figures["requests"] = totals["served"]
        figures["feedback_events_stored"] = store.counts()["events"]
        figures["feedback_duplicates_dropped"] = consumer.totals.duplicates
        store.close()
        bm25.close()
    figures["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps({"figures": figures}, indent=2) + "\n")
    for k, v in figures.items():
        if not isinstance(v, list | dict):
            print(f"{k:34s} {v}")


if __name__ == "__main__":
    main()
