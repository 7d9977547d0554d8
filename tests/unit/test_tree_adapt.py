"""Stage 1 of the generative retriever v2: contrastive adaptation of the pretrained encoder."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from tandem.training.tree_adapt import adapt_encoder, adaptation_plan, contrastive_loss, weights_fingerprint
from tandem_testing.tiny_catalog import tiny_catalog

PAIRS = [("cordless drill", "t01"), ("hammer drill", "t02"), ("paint roller", "t13"), ("lawn mower", "t20"),
         ("kitchen faucet", "t21"), ("wood screws", "t24"), ("drill driver", "t01"), ("garden hose", "t18")]


def _titles() -> dict[str, str]:
    return {it.item_id: it.title for it in tiny_catalog()}


def test_plan_covers_every_query_once_without_twin_titles_in_a_batch() -> None:
    titles = {"a": "A", "b": "B", "c": "C"}
    pairs = [(f"q{i}", "abc"[i % 3]) for i in range(30)] + [("q0", "b"), ("q-unknown", "zzz")]
    plan = adaptation_plan(pairs, titles, 3, random.Random(0))
    queries = [q for batch in plan for q, _ in batch]
    assert len(set(queries)) == len(queries) and set(queries) <= {f"q{i}" for i in range(30)}  # unknown dropped
    assert len(queries) >= 29  # at most a last single pair (nothing to contrast it with) waits for the next pass
    assert all(len({t for _, t in batch}) == len(batch) for batch in plan)
    assert all(len(batch) <= 3 for batch in plan)
    assert adaptation_plan([("q", "a")], titles, 4, random.Random(0)) == []  # no batch of two titles


def test_contrastive_loss_is_symmetric_and_rewards_matching_rows() -> None:
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    matched = contrastive_loss(q, q, 20.0)
    shuffled = contrastive_loss(q, q[[1, 2, 3, 0]], 20.0)
    assert matched < shuffled
    d = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert torch.isclose(contrastive_loss(q, d, 5.0), contrastive_loss(d, q, 5.0))


def test_adaptation_moves_queries_towards_their_titles_and_renames_the_encoder() -> None:
    from tandem.encoder import TextEncoder
    from tandem.training.tree_config import tree_profile

    enc = TextEncoder()
    before_fp = enc.fingerprint
    titles = _titles()
    queries, docs = [q for q, _ in PAIRS], [titles[i] for _, i in PAIRS]

    def gap() -> float:
        qv, _ = enc.encode(queries)
        dv, _ = enc.encode(docs)
        sim = qv @ dv.T
        return float(sim.diagonal().mean() - (sim.sum() - sim.trace()) / (sim.size - len(sim)))

    start = gap()
    cfg = tree_profile("ci", adapt_epochs=6, adapt_batch_size=8, adapt_lr=2e-3)
    stats = adapt_encoder(enc, PAIRS, titles, cfg, echo=lambda _: None)
    assert stats["steps"] == 6 and stats["passes"] == 6 and stats["stop_reason"] == "epochs done"
    assert gap() > start + 0.02  # relevant pairs pulled together relative to the rest
    assert enc.fingerprint != before_fp and enc.fingerprint == weights_fingerprint(enc.model)
    assert not any("lora" in name for name, _ in enc.model.named_parameters())  # merged: a plain BERT again


def test_adaptation_past_the_run_budget_leaves_the_encoder_untouched(tmp_path: Path) -> None:
    from tandem.encoder import TextEncoder
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    enc = TextEncoder()
    fp = enc.fingerprint
    cfg = tree_profile("ci", total_minutes=0.01)
    stats = adapt_encoder(enc, PAIRS, _titles(), cfg, run_start=time.perf_counter() - 60, echo=lambda _: None)
    assert stats["steps"] == 0 and "before the stage" in stats["stop_reason"] and enc.fingerprint == fp
    # a whole run: the adapted encoder's states are cached under its own key, beside the pretrained one's
    items = list(tiny_catalog())
    summary = train_tree(items, PAIRS, tmp_path / "m", tree_profile("ci", memorise_epochs=0, align_epochs=0,
                                                                    lora_epochs=0, adapt_batch_size=4),
                         cache_dir=tmp_path / "c", echo=lambda _: None)
    assert summary["adapt"]["steps"] >= 2 and summary["encoder_changed"]
    assert len(list((tmp_path / "c").glob("*.npz"))) == 3  # items unadapted, items adapted, queries
