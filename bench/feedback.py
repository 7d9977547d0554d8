"""Learning-from-users benchmark (issue 22): personalisation from feedback and failed-query learning.

``python -m bench.feedback [--quick] --out FILE.json`` on the Home Depot data. The behaviour
simulator is documented in :mod:`bench.feedback_sim` (seeded users with affinities for the
catalog's top-level ID clusters, sessions of training queries, an affinity-aware cascade
click model). Ranker: BM25 (Pyserini, :class:`tandem.sparse.SparseRetriever`) through the
:class:`~tandem.search.HybridSearcher` (RRF over its lists); ``--quick`` indexes the judged
items of the query pools plus 6,000 others. Item vectors and IDs: the v2 model in
``--model`` (default ``/work/v3/full``, the full-catalog model).

**Personalisation.** Every simulated event goes through a private Kafka broker's
``tandem.feedback`` topic (:class:`KafkaFeedbackSink`); the profile consumer
(:func:`tandem.personal.consumer.profile_consumer`) folds it into profiles in a private
Redis (:class:`RedisProfileStore`). Users with history run ``HISTORY`` sessions (clicks on
the non-personalised ranking), then ``FIT`` sessions whose clicks fit the re-ranking weights
(:func:`tandem.personal.fit.fit_weights`: a click model of the shown top 10 with one intercept
per position, so position bias does not pass for preference, reading by default only the
impressions down to each session's last click, the cascade hypothesis ``--examined cascade``;
the fit over every shown impression, ``all``, is reported beside it) and are then folded
into the profiles too, then ``TEST`` held-out sessions scored with
nDCG@10 on affinity-weighted relevance, personalised (:class:`PersonalFuser`, profile read
through :class:`ProfileReader`) against non-personalised. Users without history run ``TEST``
sessions through the same personalised path. Then Redis is stopped and the test sessions
run again: ``redis_outage_failed_searches`` / ``redis_outage_degraded`` must be 0.

**Failed queries.** Dev queries with a grade-4 item, each issued once perturbed with the
typo suite (:func:`tandem.eval.robustness.perturb_queries`) and once clean, by neutral
simulated users; zero-hit and no-click searches go to ``tandem.failed-queries`` (a user who
failed retypes the clean query a minute later and clicks on it). One failed-query cycle
(:func:`tandem.failed.cycle.run_cycle`, catalog vocabulary of every title) then runs, and
R@10 (grade ≥ 4) of the typo'd and of the clean queries is measured with the cycle's
corrections applied. With ``--adapter`` one tree adapter is then trained on the cycle's
corrective samples and measured through the generative retriever and the hybrid
(:mod:`bench.feedback_adapter`: ``generative_typo_r10_relative_gain``,
``hybrid_typo_r10_relative_gain``, ``*_clean_r10_drop``).

Beside the served (click-fitted) weights, the same held-out searches are re-ranked with the
default weights (``default_weights_ndcg_gain``) and by an oracle profile that knows each user's
clusters (``oracle_ndcg_gain`` at the best of prefix weights 1/2/4, chosen on those sessions):
what re-ranking these candidates by cluster can give at best. Each gain comes with its paired
standard error over the held-out sessions (``*_se``).

Figures: ``personalisation_ndcg_gain``, ``no_history_ndcg_change``,
``failed_query_r10_relative_gain``, ``clean_r10_drop`` (absolute R@10, 0.01 = 1 point), plus
``profile_read_ms_p50`` and the counts behind each.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.feedback_sim import SimUser, cascade, draw_queries, gains, make_users, oracle_scores

SEED = 2205
HISTORY, FIT, TEST = 6, 3, 2


class Ranker:
    """BM25 through the hybrid searcher, keeping each search's lists for the personal fuser."""

    def __init__(self, index: Path) -> None:
        from tandem.fusion.fit import ListRecorder
        from tandem.fusion.rrf import RRF
        from tandem.search import HybridSearcher, SearchConfig
        from tandem.sparse import SparseRetriever

        self.bm25 = SparseRetriever(index, writable=False)
        self.recorder = ListRecorder(RRF())
        self.searcher = HybridSearcher([self.bm25], fuser=self.recorder, config=SearchConfig(deadline_s=10.0))

    def search(self, query: str, k: int = 100) -> tuple[list[str], Any]:
        """Top ``k`` ids and the lists the fuser saw."""
        from tandem.search import SearchRequest

        result = self.searcher.search(SearchRequest(query=query, top_k=k))
        lists, _ = self.recorder.take()
        return [h.item_id for h in result.hits], lists

    def close(self) -> None:
        self.searcher.close()
        self.bm25.close()


def _events(user: str, request_id: str, ranked: list[str], acts: list[tuple[int, str]], ts: float) -> list[Any]:
    from tandem.feedback.events import FeedbackEvent

    out = [FeedbackEvent(request_id, user, i, "impression", p + 1, ts) for p, i in enumerate(ranked[:10])]
    out += [FeedbackEvent(request_id, user, ranked[p], kind, p + 1, ts + 0.01 * (n + 1))
            for n, (p, kind) in enumerate(acts)]
    return out


def _wait(consumer: Any, sent: int, timeout_s: float = 120.0) -> None:
    until = time.monotonic() + timeout_s
    while consumer.totals.events < sent:
        if time.monotonic() > until:
            raise RuntimeError(f"consumer saw {consumer.totals.events} of {sent} records in {timeout_s:.0f} s")
        time.sleep(0.2)


def _ndcg(ranked: list[str], g: dict[str, float]) -> float | None:
    from tandem.personal.rerank import ndcg10

    return ndcg10(ranked, g) if any(v > 0 for v in g.values()) else None


def personalisation(ranker: Ranker, sink: Any, consumer: Any, reader: Any, redis: Any, texts: dict, qrels: dict,
                    codes: dict, n_users: int, n_cold: int, weights_out: Path | None = None,
                    examined: str = "cascade") -> dict[str, Any]:
    """Phase 1 (module docstring)."""
    from tandem.fusion.rrf import RRF
    from tandem.fusion.scoring import candidate_ids
    from tandem.personal.fit import fit_weights
    from tandem.personal.rerank import PersonalFuser, Session

    rng = random.Random(SEED)
    users = make_users(n_users, "h", qrels, codes, rng)
    cold = make_users(n_cold, "n", qrels, codes, rng)
    plan = {u.user_id: draw_queries(u, HISTORY + FIT + TEST, qrels, codes, rng) for u in users + cold}
    now, sent = time.time() - 3600, 0
    for u in users:
        for s, q in enumerate(plan[u.user_id][:HISTORY]):
            ranked, _ = ranker.search(texts[q])
            ev = _events(u.user_id, f"{u.user_id}-h{s}", ranked, cascade(u, ranked, qrels[q], codes, rng), now + s)
            sink.send(ev)
            sent += len(ev)
    _wait(consumer, sent)
    reads: list[float] = []

    def observed(u: SimUser, q: str) -> tuple[list[str], Any, dict]:
        ranked, lists = ranker.search(texts[q])
        t0 = time.perf_counter()
        scores = reader.scores(u.user_id, candidate_ids(lists), time.monotonic() + 0.05)
        reads.append((time.perf_counter() - t0) * 1000)
        return ranked, lists, scores

    fit_sessions, pending = [], []
    for u in users:
        for q in plan[u.user_id][HISTORY:HISTORY + FIT]:
            ranked, lists, scores = observed(u, q)
            acts = cascade(u, ranked, qrels[q], codes, rng)
            engaged: dict[str, float] = {}
            for p, kind in acts:
                engaged[ranked[p]] = max(engaged.get(ranked[p], 0.0), 2.0 if kind == "purchase" else 1.0)
            fit_sessions.append(Session(RRF().fuse(lists, 100), scores, engaged))
            ev = _events(u.user_id, f"{u.user_id}-f{len(fit_sessions)}", ranked, acts, now + HISTORY + len(fit_sessions))
            pending.extend(ev)
    # The fit sessions happened before the held-out ones: their clicks are part of the profile
    # the held-out sessions read (the scores above were read before they were folded in).
    sink.send(pending)
    _wait(consumer, sent + len(pending))
    # A click model over the shown top 10 with one intercept per position (position bias),
    # served as the fit says: logrank base, depth 100 (tandem.personal.fit). ``examined`` says
    # which impressions it reads; the other choice is fitted too and reported beside it.
    other = next(e for e in ("all", "cascade") if e != examined)
    weights, fit = fit_weights(fit_sessions, shown=10, examined=examined)
    other_weights, _ = fit_weights(fit_sessions, shown=10, examined=other)
    fuser = PersonalFuser(RRF(), weights, depth=100, base=fit["base"])
    if weights_out is not None:
        from tandem.personal.serving import save_weights

        save_weights(weights_out, weights, 100, fit)

    # Diagnostics beside the served (fitted) weights, on the same searches: the default weights,
    # and an oracle profile that knows each user's clusters, at the best of three weights chosen
    # on these held-out sessions themselves (a ceiling for re-ranking these candidates).
    oracles = {w: PersonalFuser(RRF(), {"profile_prefix1": w}, depth=100) for w in (1.0, 2.0, 4.0)}
    rankers = {"fitted": (fuser, False), "default": (PersonalFuser(RRF()), False),
               "other": (PersonalFuser(RRF(), other_weights, depth=100, base=fit["base"]), False),
               **{f"oracle_{w:g}": (f, True) for w, f in oracles.items()}}

    def evaluate(group: list[SimUser]) -> tuple[list[float], dict[str, list[float]], int]:
        base: list[float] = []
        pers: dict[str, list[float]] = {name: [] for name in rankers}
        failed = 0
        for u in group:
            for q in plan[u.user_id][HISTORY + FIT:]:
                try:
                    ranked, lists, scores = observed(u, q)
                except Exception:  # noqa: BLE001 - counted: a failed search is a finding
                    failed += 1
                    continue
                g = gains(u, qrels[q], codes)
                b = _ndcg(ranked[:10], g)
                if b is None:
                    continue
                base.append(b)
                for name, (f, oracle) in rankers.items():
                    sc = oracle_scores(u, list(scores), codes) if oracle and scores else scores
                    pers[name].append(_ndcg([h.item_id for h in f.fuse(lists, 10, sc)], g) or 0.0)
        return base, pers, failed

    hb, hps, _ = evaluate(users)
    cb, cps, _ = evaluate(cold)
    hp, cp = hps["fitted"], cps["fitted"]
    gain = {name: round(statistics.mean(v) - statistics.mean(hb), 4) for name, v in hps.items()}
    # paired standard error of each gain over the held-out sessions (how far noise alone moves it)
    gain_se = {name: round(statistics.stdev([p - b for p, b in zip(v, hb, strict=True)]) / len(hb) ** 0.5, 4)
               for name, v in hps.items()}
    best_oracle = max((n for n in gain if n.startswith("oracle_")), key=gain.__getitem__)
    out = {"weights": weights, "fit": fit, "history_sessions": len(hb), "no_history_sessions": len(cb),
           "ndcg_unpersonalised": round(statistics.mean(hb), 4), "ndcg_personalised": round(statistics.mean(hp), 4),
           "personalisation_ndcg_gain": gain["fitted"], "personalisation_ndcg_gain_se": gain_se["fitted"],
           "no_history_ndcg_change": round(statistics.mean(cp) - statistics.mean(cb), 4),
           "default_weights_ndcg_gain": gain["default"], "default_weights_ndcg_gain_se": gain_se["default"],
           f"fit_{other}_ndcg_gain": gain["other"], f"fit_{other}_ndcg_gain_se": gain_se["other"],
           f"fit_{other}_weights": other_weights,
           "oracle_ndcg_gain": gain[best_oracle], "oracle_ndcg_gain_se": gain_se[best_oracle],
           "oracle_prefix1_weight": float(best_oracle.split("_")[1]),
           "profile_read_ms_p50": round(statistics.median(reads), 3),
           "profile_store": reader.store.backend, "profiles_applied": consumer.totals.applied}
    if redis is not None:  # outage: searches must still answer, unpersonalised, not degraded
        redis.stop()
        failed = degraded = 0
        from tandem.search import SearchRequest
        for u in users[:50]:
            q = plan[u.user_id][-1]
            try:
                r = ranker.searcher.search(SearchRequest(query=texts[q], top_k=10))
                ranker.recorder.take()
                degraded += bool(r.degraded)
                reader.scores(u.user_id, [h.item_id for h in r.hits], time.monotonic() + 0.05)
            except Exception:  # noqa: BLE001
                failed += 1
        out |= {"redis_outage_failed_searches": failed, "redis_outage_degraded": degraded,
                "redis_outage_store_errors": reader.store.errors}
    return out



def _recall10(ranked: list[str], grades: dict[str, int]) -> float:
    rel = {i for i, g in grades.items() if g >= 4}
    return len(rel & set(ranked[:10])) / len(rel) if rel else 0.0


def failed_queries(ranker: Ranker, sink: Any, feedback_consumer: Any, base_sent: int, store: Any, publisher: Any,
                   collector: Any, start_collector: Any, failed_path: Path, texts: dict, qrels: dict, vocab: Any, out: Path) -> dict[str, Any]:
    """Phase 2 (module docstring)."""
    from tandem.eval.robustness import perturb_queries
    from tandem.failed.cycle import Corrections, run_cycle
    from tandem.failed.events import FailedQuery, failure_reason
    from tandem.failed.stream import read_failed

    rng = random.Random(SEED + 1)
    typo = perturb_queries(texts, "typo", seed=SEED)
    neutral = SimUser("", frozenset())
    now, sent, n_failed, records = time.time() - 7200, 0, 0, []
    for n, q in enumerate(sorted(texts)):
        for variant, text in (("t", typo[q]), ("c", texts[q])):
            user = f"f{variant}{n}"
            ranked, _ = ranker.search(text)
            acts = cascade(neutral, ranked, qrels[q], {}, rng)
            ts = now + 2 * n
            ev = _events(user, f"{user}-0", ranked, acts, ts)
            reason = failure_reason(len(ranked), None, None) or (None if acts else "no_click")
            if reason:
                records.append(FailedQuery(f"{user}-0", user, text, reason, len(ranked), 0.0, ts))
                retry, _ = ranker.search(texts[q])  # the user retypes the intended query
                ev += _events(user, f"{user}-1", retry, cascade(neutral, retry, qrels[q], {}, rng), ts + 60)
            sink.send(ev)
            sent += len(ev)
    publisher.send(records, wait=True)
    n_failed = len(records)
    start_collector()
    _wait(collector, n_failed)
    _wait(feedback_consumer, base_sent + sent)
    started = time.perf_counter()
    report = run_cycle(read_failed(failed_path), vocab, out, feedback=[e for _, e in store.events()],
                       search=lambda t: ranker.search(t, 5)[0])
    cycle_s = time.perf_counter() - started
    fixes = Corrections.load(out)

    def r10(queries: dict[str, str], rewrite: bool) -> float:
        return statistics.mean(_recall10(ranker.search(fixes.rewrite(t) if rewrite else t, 10)[0], qrels[q])
                               for q, t in queries.items())

    typo_before, typo_after = r10(typo, False), r10(typo, True)
    clean_before, clean_after = r10(texts, False), r10(texts, True)
    return {"dev_queries": len(texts), "failed_searches": n_failed, "cycle_groups": report["groups"],
            "cycle_kinds": report["kinds"], "corrective_samples": report["samples"],
            "corrections": report["corrections"], "cycle_seconds": round(cycle_s, 2),
            "typo_r10_before": round(typo_before, 4), "typo_r10_after": round(typo_after, 4),
            "failed_query_r10_relative_gain": round((typo_after - typo_before) / typo_before, 4) if typo_before else None,
            "clean_r10_before": round(clean_before, 4), "clean_r10_after": round(clean_after, 4),
            "clean_r10_drop": round(clean_before - clean_after, 4), "adapter_trained": False}


def main() -> None:
    """Run both phases, print the figures, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller pools and a 6,000-item index plus the judged items")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--adapter", action="store_true",
                    help="also train one tree adapter on the cycle's corrective samples and measure it (bench.feedback_adapter)")
    ap.add_argument("--weights-out", type=Path, help="write the fitted re-ranking weights (tandem serve --profiles-weights)")
    ap.add_argument("--model", type=Path, default=Path("/work/v3/full"), help="v2 model folder (item vectors, IDs)")
    ap.add_argument("--examined", choices=("cascade", "all"), default="cascade",
                    help="impressions the click model reads: down to the last click (cascade) or all shown; "
                         "the other is fitted and reported too")
    args = ap.parse_args()

    import logging

    from tandem.catalog.datasets import data_root
    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.failed.diagnose import Vocabulary
    from tandem.failed.stream import FailedQueryPublisher, failed_query_consumer
    from tandem.feedback.store import FeedbackStore
    from tandem.feedback.stream import KafkaFeedbackSink, feedback_consumer
    from tandem.personal import ItemVectors, MemoryProfileStore, ProfileReader, RedisProfileStore
    from tandem.personal.consumer import profile_consumer
    from tandem.sparse import SparseConfig, build_index
    from tandem.streams.config import StreamSettings
    from tandem_testing.infra import KafkaBroker, RedisServer

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    rng = random.Random(SEED)
    data = data_root("homedepot")
    n_train, n_dev, n_users, n_cold = (1500, 300, 150, 100) if args.quick else (6000, 1000, 600, 300)
    tq, tr = read_queries(data / "queries.train.tsv"), read_qrels(data / "qrels.train.tsv".replace("tsv", "txt"))
    train_ids = sorted(rng.sample(sorted(q for q in tq if q in tr and any(g >= 4 for g in tr[q].values())), n_train))
    dq, dr = read_queries(data / "queries.dev.tsv"), read_qrels(data / "qrels.dev.txt")
    dev_ids = sorted(rng.sample(sorted(q for q in dq if q in dr and any(g >= 4 for g in dr[q].values())), n_dev))
    train = {q: dict(tr[q]) for q in train_ids}
    dev = {q: dict(dr[q]) for q in dev_ids}
    texts = {q: tq[q] for q in train_ids}
    all_items = load_items(data / "products.jsonl").items
    vocab = Vocabulary(it.title for it in all_items)
    items = all_items
    if args.quick:
        judged = {d for qs in (train, dev) for docs in qs.values() for d in docs}
        rest = [it for it in all_items if it.item_id not in judged]
        items = [it for it in all_items if it.item_id in judged] + rng.sample(rest, 6_000)
    vectors = ItemVectors.from_tree_model(args.model)
    codes = {i: vectors.code(i) for i in (it.item_id for it in items) if i in vectors}
    figures: dict[str, Any] = {"items": len(items), "train_query_pool": len(train), "model": str(args.model)}

    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp, KafkaBroker() as broker:
        tmpdir = Path(tmp)
        build_index(items, tmpdir / "index", SparseConfig(index_threads=2))
        ranker = Ranker(tmpdir / "index")
        settings = StreamSettings(kafka_bootstrap=broker.bootstrap, home=tmpdir)
        redis: Any = None
        try:
            redis = RedisServer().__enter__()
            profiles: Any = RedisProfileStore(redis.url, socket_timeout_s=0.1)  # a loaded 2-core machine
        except Exception as exc:  # noqa: BLE001 - no redis-server here: the in-process store, said in the figures
            print(f"redis unavailable ({exc}); profiles in the in-process store", flush=True)
            redis, profiles = None, MemoryProfileStore()
        store = FeedbackStore(tmpdir / "feedback.sqlite")
        # The topic exists before its consumers start, as in a deployment: drawing the full run's
        # users and sessions takes longer than a consumer waits for a topic to appear (30 s).
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics({settings.feedback_topic: {"num_partitions": 3, "replication_factor": 1}},
                            wait_for_metadata=True)
        admin.close()
        consumers = {"profiles": profile_consumer(profiles, vectors, settings),
                     "feedback": feedback_consumer(store, settings),
                     "failed": failed_query_consumer(tmpdir / "failed.jsonl", settings)}
        # The failed-query consumer starts once phase 2 published (the topic exists from then on).
        threads = {n: threading.Thread(target=c.run, name=n, daemon=True) for n, c in consumers.items()}
        for n in ("profiles", "feedback"):
            threads[n].start()
        sink, publisher = KafkaFeedbackSink(settings), FailedQueryPublisher(settings)
        try:
            figures |= personalisation(ranker, sink, consumers["profiles"], ProfileReader(profiles, vectors), redis,
                                       texts, train, codes, n_users, n_cold, args.weights_out, args.examined)
            print("personalisation:", json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}),
                  flush=True)
            base_sent = consumers["feedback"].totals.events
            figures |= failed_queries(ranker, sink, consumers["feedback"], base_sent,
                                      store, publisher, consumers["failed"], threads["failed"].start,
                                      tmpdir / "failed.jsonl",
                                      {q: dq[q] for q in dev_ids}, dev, vocab, args.out.with_suffix(".cycle"))
            if args.adapter:
                from bench.feedback_adapter import adapter_phase
                from tandem.failed.cycle import Corrections
                from tandem.eval.robustness import perturb_queries

                clean = {q: dq[q] for q in dev_ids}
                figures |= adapter_phase(args.model, args.out.with_suffix(".cycle"), items, ranker.bm25,
                                         perturb_queries(clean, "typo", seed=SEED), clean, dev, tmpdir / "adapter",
                                         rewrite=Corrections.load(args.out.with_suffix(".cycle")).rewrite)
                figures["adapter_trained"] = True
        finally:
            for c in consumers.values():
                c.stop()
            for t in threads.values():
                if t.is_alive():
                    t.join(timeout=30)
            sink.close()
            publisher.close()
            store.close()
            ranker.close()
            if redis is not None:
                redis.__exit__(None, None, None)
    figures["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps({"figures": figures}, indent=2) + "\n")
    for k, v in figures.items():
        if not isinstance(v, list | dict):
            print(f"{k:34s} {v}")


if __name__ == "__main__":
    main()
