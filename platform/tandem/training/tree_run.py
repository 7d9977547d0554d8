"""One v2 generative training run from files: encode → IDs → stages → final check → model folder.

Shared by ``tandem train generative``, the demo, the pipelines and the benchmarks. The
state caches (item texts; spans, training and dev queries) are written under
``out/cache`` and reused by a later run into the same folder when their texts match,
so re-running with other training settings does not encode again.
"""

from __future__ import annotations

import logging
import random
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.catalog.item import Item
from tandem.training.report import SUMMARY_FILE
from tandem.training.tree_config import TreeTrainConfig

if TYPE_CHECKING:
    from tandem.training.distributed import TorchDistributed

log = logging.getLogger(__name__)


def _cached_states(encoder: Any, texts: list[str], cache_dir: Path, echo: Callable[[str], None], what: str,
                   parallel: TorchDistributed | None = None) -> Any:
    """States of ``texts``, reused from ``cache_dir`` when there; with a distributed ``parallel``
    every rank encodes its shard of the texts (all ranks reuse the file only if all have it)."""
    import hashlib

    from tandem.training.state_cache import StateCache

    want = list(dict.fromkeys(texts))
    key = hashlib.sha256(encoder.fingerprint.encode() + f"|{encoder.max_length}|".encode()
                         + "\n".join(want).encode()).hexdigest()[:20]
    path = cache_dir / f"{key}.npz"
    cache = StateCache.load(path) if path.is_file() else None
    hit = cache is not None and cache.texts == want
    if parallel is not None and parallel.world > 1:
        hit = not parallel.any(not hit)
    if hit:
        echo(f"{what}: {len(want)} texts, encoder states reused from {path}")
        return cache
    t0 = time.perf_counter()
    if parallel is not None and parallel.world > 1:
        from tandem.training.distributed import sharded_states

        cache = sharded_states(parallel, lambda ts: StateCache.build(encoder, ts), want, encoder.dim)
    else:
        cache = StateCache.build(encoder, want)
    if parallel is None or parallel.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.save(path)
    echo(f"{what}: {len(want)} texts encoded in {time.perf_counter() - t0:.0f} s ({cache.flat.nbytes / 2**20:.0f} MiB fp16)")
    return cache


def _encode_rate(encoder: Any, texts: list[str], seed: int, sample: int = 256) -> float:
    """Seconds per text of encoding (states kept) on a seeded sample of ``texts``: what re-encoding
    the catalog after the encoder stage will cost, when the first encoding came from the cache."""
    from tandem.training.state_cache import StateCache

    picked = random.Random(seed).sample(texts, min(sample, len(texts)))
    t0 = time.perf_counter()
    StateCache.build(encoder, picked)
    return (time.perf_counter() - t0) / max(len(picked), 1)


def _item_states(encoder: Any, texts: list[str], cache_dir: Path, echo: Callable[[str], None],
                 parallel: TorchDistributed | None, config: TreeTrainConfig) -> tuple[Any, float]:
    """The item texts' states under ``encoder`` and the seconds per text encoding costs here
    (timed on a sample when they came from the cache; ``total_minutes`` plans with it)."""
    t0 = time.perf_counter()
    docs = _cached_states(encoder, texts, cache_dir, echo, "item texts", parallel)
    rate = (time.perf_counter() - t0) / max(len(set(texts)), 1)
    if config.total_minutes and rate < 1e-4:  # reused from the cache: time a sample instead
        rate = _encode_rate(encoder, texts, config.seed)
    return docs, rate


def train_tree(items: list[Item], pairs: list[tuple[str, str]], out: Path, config: TreeTrainConfig, *,
               device: str = "cpu", dev: tuple[Mapping[str, str], Mapping[str, Mapping[str, int]]] | None = None,
               id_map: Any = None, cache_dir: Path | None = None, holdout: Sequence[str] = (),
               echo: Callable[[str], None] = print, parallel: TorchDistributed | None = None) -> dict[str, Any]:
    """Train a v2 generative retriever on ``items`` and ``pairs`` (query text, item id) into ``out``.

    ``dev`` (queries, qrels) adds dev figures at init and after each stage to the summary.
    ``id_map``: IDs built beforehand in this encoder's space (the pipeline's ID step); else
    built here. ``cache_dir``: where encoder states are kept between runs (default
    ``$TANDEM_HOME/cache/encoder-states``, keyed by encoder and texts).
    ``holdout``: ids of training queries kept out of ``pairs`` (``fusion_holdout``), recorded
    in the summary under :data:`HOLDOUT_KEY`.
    ``parallel``: a :class:`~tandem.training.distributed.TorchDistributed` to train on all its
    ranks (rank 0 alone prints and writes ``out`` and the state caches); ``None``: one process.
    Returns the training summary (also written as ``out/training_summary.json``).
    """
    import torch

    if parallel is not None and parallel.rank != 0:
        from tandem.training.distributed import silent

        echo = silent

    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train_tree(items, pairs, out, config, device, dev, id_map, cache_dir, echo, t_start, holdout,
                           parallel)
    finally:
        torch.set_num_threads(threads)


def _train_tree(items: list[Item], pairs: list[tuple[str, str]], out: Path, config: TreeTrainConfig, device: str,
                dev: Any, id_map: Any, cache_dir: Path | None, echo: Callable[[str], None],
                t_start: float, holdout: Sequence[str], parallel: TorchDistributed | None) -> dict[str, Any]:
    import json

    from tandem.config import get_settings
    from tandem.encoder import TextEncoder
    from tandem.errors import InvalidInput
    from tandem.generative.model import pick_device
    from tandem.generative.tree_artifact import save_tree_model
    from tandem.ids import build_semantic_ids
    from tandem.ids.embed import PretrainedEmbedder
    from tandem.ids.idmap import item_text
    from tandem.training.tree_config import tree_id_config
    from tandem.training.tree_data import title_spans
    from tandem.training.tree_strategies import augmented_pairs
    from tandem.training.tree_trainer import TreeTrainer

    dev_t = pick_device(device) if parallel is None else parallel.device
    encoder = TextEncoder(config.encoder or None, device=dev_t, max_length=config.max_length,
                          precision=config.precision)
    out.mkdir(parents=True, exist_ok=True)
    texts = [item_text(it) for it in items]
    cache_dir = cache_dir or get_settings().home / "cache" / "encoder-states"
    adapt = config.adapt_epochs > 0 and bool(pairs)
    docs: Any = None
    embedder = PretrainedEmbedder(config.encoder)
    if id_map is None or not adapt:  # the IDs come from the unadapted encoder's title vectors
        docs, encode_rate = _item_states(encoder, texts, cache_dir, echo, parallel, config)
        row = docs.index()
        embedder.precomputed(texts, docs.pooled[[row[t] for t in texts]])
    t0 = time.perf_counter()
    if id_map is None:
        id_map = build_semantic_ids(items, tree_id_config(config, len(items)), embedder)
    elif getattr(id_map.embedder, "fingerprint", None) != embedder.fingerprint:
        raise InvalidInput("`ids` were built with another embedder than this encoder: v2 IDs must come from "
                           "the same pretrained encoder (build them with the tree ID config)")
    elif set(id_map.item_ids()) != {it.item_id for it in items}:
        raise InvalidInput("`ids` do not cover exactly the catalog's items")
    stats = id_map.stats()
    echo(f"semantic IDs: {len(id_map)} items, code space {id_map.code_space()} ({time.perf_counter() - t0:.1f} s)")
    shared = parallel if parallel is not None and parallel.world > 1 else None
    adapt_stats: dict[str, Any] | None = None
    if adapt:
        from tandem.training.tree_adapt import adapt_encoder

        adapt_stats = adapt_encoder(encoder, pairs, {it.item_id: item_text(it) for it in items}, config,
                                    parallel=shared, run_start=t_start, echo=echo)
        if adapt_stats["steps"]:
            docs = None  # states of the unadapted encoder: encoded again below
        else:
            adapt_stats = None
    if docs is None:
        docs, encode_rate = _item_states(encoder, texts, cache_dir, echo, parallel, config)
    rng = random.Random(config.seed)
    spans = [s for t in texts for s in title_spans(t, config.spans_per_item, rng)]
    rewrites = (q for q, _ in augmented_pairs(pairs, config.augment_share, config.seed))  # the trainer draws the same
    qtexts = [*spans, *(q for q, _ in pairs), *((dev[0].values()) if dev else ()), *rewrites]
    queries = _cached_states(encoder, qtexts, cache_dir, echo, "queries and title spans", parallel)
    if shared is not None:
        from tandem.training.distributed import sharded_states
        from tandem.training.state_cache import StateCache

        shared.check_same("semantic IDs", id_map.as_array().tobytes())
        trainer = TreeTrainer(config, items, id_map, pairs, encoder, (docs, queries), dev=dev, echo=echo,
                              parallel=shared, run_clock=(t_start, encode_rate), encode=lambda ts: sharded_states(
                                  shared, lambda part: StateCache.build(encoder, part), ts, encoder.dim))
    else:
        trainer = TreeTrainer(config, items, id_map, pairs, encoder, (docs, queries), dev=dev, echo=echo,
                              run_clock=(t_start, encode_rate))
    summary = trainer.run()
    if shared is not None:
        summary["world_size"] = shared.world
    summary.update({
        "format": "tree", "profile": config.profile, "config": config.model_dump(), "device": str(dev_t),
        "id_stats": stats, "total_seconds": time.perf_counter() - t_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "memorisation_reached_target": summary["final_memorisation"]["exact_match"] >= 0.9,
        **({"adapt": adapt_stats, "encoder_changed": True} if adapt_stats else {}),
        **({HOLDOUT_KEY: sorted(holdout)} if holdout else {}),
    })
    if shared is not None and shared.rank != 0:
        shared.barrier()  # rank 0 writes the model folder; the others wait for it
        return summary
    save_tree_model(out, trainer.model, encoder, id_map, base_fingerprint=embedder.fingerprint,
                    training={k: v for k, v in summary.items() if k in ("profile", "items", "pairs", "adapt", "stages",
                                                                         "final_memorisation", "total_seconds")},
                    replay=pairs)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    _plot_stages(summary, out)
    if shared is not None:
        shared.barrier()
    echo(f"done in {summary['total_seconds'] / 60:.1f} min, peak RSS {summary['peak_rss_mb']:.0f} MB")
    return summary


def train_tree_from_files(catalog: Path, queries_path: Path, qrels_path: Path, out: Path, profile: str = "ci", *,
                          encoder: Path | None = None, seed: int | None = None, device: str | None = None,
                          min_grade: int | None = None, overrides: dict[str, Any] | None = None,
                          dev_queries: Path | None = None, dev_qrels: Path | None = None,
                          ids: Path | None = None, cache_dir: Path | None = None,
                          echo: Callable[[str], None] = print, parallel: TorchDistributed | None = None) -> dict[str, Any]:
    """:func:`train_tree` from files (what ``tandem train generative`` and the pipelines call)."""
    from pydantic import ValidationError

    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.config import get_settings
    from tandem.errors import InvalidInput
    from tandem.training.data import training_pairs
    from tandem.training.tree_config import tree_profile

    if parallel is not None and parallel.rank != 0:
        from tandem.training.distributed import silent

        echo = silent
    settings = get_settings()
    opts = dict(overrides or {})
    opts["seed"] = settings.seed if seed is None else seed
    if min_grade is not None:
        opts["min_grade"] = min_grade
    if encoder is not None:
        opts["encoder"] = str(encoder)
    try:
        config = tree_profile(profile, **opts)
    except ValidationError as exc:
        raise InvalidInput(f"`--set`: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    if (dev_queries is None) != (dev_qrels is None):
        raise InvalidInput("`--dev-queries` and `--dev-qrels` go together")
    loaded = load_items(catalog)
    echo(f"catalog: {loaded.summary()}")
    train_queries, train_qrels = read_queries(queries_path), read_qrels(qrels_path)
    holdout = fusion_holdout(train_queries, train_qrels, config.fusion_holdout, config.seed)
    pairs, skipped = training_pairs(train_queries, train_qrels, {it.item_id for it in loaded.items},
                                    config.min_grade)
    if holdout:  # by text: another query id with the same text must not teach it either
        held = {train_queries[q] for q in holdout}
        pairs = [(q, i) for q, i in pairs if q not in held]
        echo(f"fusion holdout: {len(holdout)} training queries kept out of generative training")
    echo(f"training pairs: {len(pairs)} (grade >= {config.min_grade}); skipped {skipped}")
    dev = (read_queries(dev_queries), read_qrels(dev_qrels)) if dev_queries and dev_qrels else None
    id_map = None
    if ids is not None:
        from tandem.ids.idmap import IdMap

        id_map = IdMap.load(str(ids))
    return train_tree(loaded.items, pairs, out, config, device=device or settings.device, dev=dev, id_map=id_map,
                      cache_dir=cache_dir, holdout=sorted(holdout), echo=echo, parallel=parallel)


#: Key of the held-out training query ids in ``training_summary.json`` (see ``fusion_holdout``).
HOLDOUT_KEY = "fusion_holdout_qids"


def fusion_holdout(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], share: float,
                   seed: int) -> set[str]:
    """A seeded sample of ``share`` of the judged training query ids, kept out of generative training."""
    judged = sorted(q for q in qrels if q in queries)
    n = round(len(judged) * share)
    return set(random.Random(seed).sample(judged, n)) if n else set()


def read_fusion_holdout(model_dir: Path) -> set[str]:
    """The training query ids a v2 model folder kept out of its training (empty: none)."""
    import json

    try:
        summary = json.loads((Path(model_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return {str(q) for q in summary.get(HOLDOUT_KEY, [])} if isinstance(summary, dict) else set()


def _plot_stages(summary: dict[str, Any], out: Path) -> None:
    """``training_curve.png``: exact-match and (with dev queries) dev figures after each stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tandem.training.report import CURVE_FILE

    stages = list(summary["stages"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(stages, [summary["stages"][s]["memorisation"]["exact_match"] for s in stages], "o-", label="exact-match")
    for key in ("ndcg@10", "r@10", "r@100"):
        vals = [(summary["stages"][s].get("dev") or {}).get(key) for s in stages]
        if all(v is not None for v in vals):
            ax.plot(stages, [float(v) for v in vals if v is not None], "o-", label=f"dev {key}")
    ax.set_ylim(0, 1)
    ax.set_title(f"generative v2 — {summary['items']} items, {summary['total_seconds'] / 60:.1f} min")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / CURVE_FILE)
    plt.close(fig)
