"""Monthly merge of a v2 (tree) base and its adapter into a new base (issue 21 item 3,
exercise 5.4: "merge the increments into the base monthly").

An hourly adapter is trained on the current base and covers every item added since it
(``tandem train adapter`` selects the items the base's ID map lacks), so the base's *adapter
chain* is its current adapter. The merge:

1. **Fold.** Load the previous base and attach the adapter
   (:func:`~tandem.generative.tree_adapter.attach_tree_adapter`): the LoRA matrices are merged
   into the decoder's weights and the adapter's items join the ID tree and the item table
   under the IDs the adapter assigned. This *teacher* serves exactly what base + adapter served.
2. **Distil.** A *student* starts as a copy of the teacher's decoder and trains all of it for
   ``epochs`` on (a) the old items' doc and pseudo-query examples with KL from the teacher's
   per-level ID distributions (soft targets at ``temperature``: how the old base ranks every
   node, not only the gold one) and (b) the added items' examples with the hard-label tree
   loss, so they are learned into the base weights rather than carried by a low-rank delta.
   The encoder stays frozen (its states are encoded once).
3. **Save** as a plain v2 base folder (:func:`~tandem.generative.tree_artifact.save_tree_model`)
   with the teacher's ID map: every old item keeps its ID, every added item keeps the ID the
   adapter gave it. The folder's decoder checksum is new, so the old adapter (made for the
   previous base) is refused by it and skipped by serving: the chain starts empty.

Checks, before and after distillation, on held-out pseudo-queries (the phrasing after those
trained on): R@k of old and of added items for the teacher (= base + adapter) and the
student, and ID stability; :func:`merge_base` returns them in its summary.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from tandem.catalog.item import Item
from tandem.errors import InvalidInput

if TYPE_CHECKING:
    from tandem.generative.tree_model import TreeDecoder


class MergeConfig(BaseModel):
    """Everything a merge run depends on (stored in the new base's training summary)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=2, ge=0)
    """Distillation passes (0 = fold only: the new base is the teacher itself)."""
    lr: float = Field(default=5e-5, gt=0)
    """AdamW learning rate of the student (all decoder weights; small: it starts at the teacher)."""
    batch_size: int = Field(default=64, ge=1)
    temperature: float = Field(default=2.0, gt=0)
    """Softening of the teacher's ID distributions (the KL is scaled by its square)."""
    kl_weight: float = Field(default=1.0, ge=0)
    """Weight of the old items' KL term against the added items' hard-label loss."""
    queries_per_item: int = Field(default=4, ge=0)
    """Pseudo-queries per item (plus its own text) in the distillation examples."""
    max_old_items: int = Field(default=5000, ge=1)
    """Old items distilled on per run (a seeded sample; all when fewer)."""
    eval_items: int = Field(default=300, ge=1)
    """Old items the recall checks sample (added items: all)."""
    eval_k: int = Field(default=10, ge=1)
    min_query_words: int = Field(default=2, ge=1)
    """Shorter pseudo-queries are dropped (as in the adapter: see ``AdapterConfig``)."""
    seed: int = 13
    device: str = "auto"


def _recall(art: Any, items: Sequence[Item], queries: Sequence[str], k: int) -> float:
    """Share of ``queries`` whose item (same position in ``items``) is in the top ``k``."""
    from tandem.generative.tree_decoding import tree_beam_search

    if not items:
        return 0.0
    rows = {iid: i for i, iid in enumerate(art.id_map.item_ids())}
    want = np.array([rows.get(it.item_id, -2) for it in items])
    found = np.zeros(len(items), bool)
    enc = art.encoder
    with torch.inference_mode():
        for s in range(0, len(queries), 64):
            ids, mask = enc.tokenize(list(queries[s : s + 64]))
            st = enc.states(ids, mask)
            nodes, _ = tree_beam_search(art.model, art.index, enc.pool(st, mask), st, mask,
                                        beams=[max(k, 50)] * (art.index.length - 1) + [k])
            found[s : s + len(nodes)] = (nodes.numpy() == want[s : s + len(nodes), None]).any(1)
    return float(found.mean())


def fold_adapter(base_dir: Path, adapter_dir: Path | None, device: str | torch.device = "cpu") -> tuple[Any, list[str]]:
    """The base with ``adapter_dir`` folded in (LoRA merged, items appended) and the added item ids."""
    from tandem.generative.tree_adapter import attach_tree_adapter
    from tandem.generative.tree_artifact import load_tree_model

    art = load_tree_model(Path(base_dir), device)
    before = len(art.id_map.item_ids())
    if adapter_dir is not None:
        attach_tree_adapter(art, Path(adapter_dir))
    return art, art.id_map.item_ids()[before:]


def _kl(student: TreeDecoder, teacher: TreeDecoder, q: torch.Tensor, states: torch.Tensor,
        mask: torch.Tensor, path: torch.Tensor, t: float) -> torch.Tensor:
    """Sum over ID positions of KL(teacher ‖ student) of the node distributions, teacher-forced on ``path``."""
    kv_s, bias_s = student.memory(states, mask)
    with torch.no_grad():
        kv_t, bias_t = teacher.memory(states, mask)
    total = torch.zeros((), device=q.device)
    for p in range(student.positions):
        parents = None if p == 0 else path[:, p - 1 : p]
        s_logits = student.logits(p, student.step(p, parents, q, kv_s, bias_s)[:, 0]).float()
        with torch.no_grad():
            t_logits = teacher.logits(p, teacher.step(p, parents, q, kv_t, bias_t)[:, 0]).float()
        total = total + F.kl_div(F.log_softmax(s_logits / t, -1), F.log_softmax(t_logits / t, -1),
                                 log_target=True, reduction="batchmean") * t * t
    return total


def _examples(items: Sequence[Item], rows: dict[str, int], n_q: int, min_words: int, seed: int
              ) -> tuple[list[tuple[str, int]], list[str]]:
    """(text, item row) training pairs — the item's text and ``n_q`` pseudo-queries — and one
    held-out query per item (the phrasing after those trained on, else the title)."""
    from tandem.training.adapter import pseudo_query_source

    queries, _ = pseudo_query_source("title", min_words)
    pairs, held = [], []
    for it in items:
        qs = queries(it, n_q + 1, seed)
        pairs += [(it.text(), rows[it.item_id])] + [(q, rows[it.item_id]) for q in qs[:n_q]]
        held.append(qs[n_q] if len(qs) > n_q else it.title)
    return pairs, held


def merge_base(base_dir: Path, adapter_dir: Path | None, items: Sequence[Item], out: Path, cfg: MergeConfig, *,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Fold ``adapter_dir`` into the base in ``base_dir``, distil, write the new base to ``out``;
    returns the summary (also in the new base's manifest). ``items``: the catalog's items (texts
    for the examples and checks); every item the teacher knows must be among them."""
    from tandem.generative.model import pick_device
    from tandem.generative.tree_artifact import save_tree_model
    from tandem.generative.tree_model import tree_loss
    from tandem.training.state_cache import StateCache
    from tandem.training.tree_data import batches, make_samples

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    teacher, added = fold_adapter(base_dir, adapter_dir, device)
    old_ids = teacher.id_map.item_ids()[: len(teacher.id_map.item_ids()) - len(added)]
    codes_before = {i: tuple(teacher.id_map.codes(i)) for i in teacher.id_map.item_ids()}
    by_id = {it.item_id: it for it in items}
    missing = [i for i in codes_before if i not in by_id]
    if missing:
        raise InvalidInput(f"`items` lacks {len(missing)} items the merged model knows (e.g. {missing[:3]}); "
                           "pass the catalog the base and its adapter were trained on")
    rows = {iid: r for r, iid in enumerate(teacher.id_map.item_ids())}
    new_items = [by_id[i] for i in added]
    pick = np.sort(rng.choice(len(old_ids), min(cfg.max_old_items, len(old_ids)), replace=False))
    old_items = [by_id[old_ids[i]] for i in pick]
    old_pairs, old_held = _examples(old_items, rows, cfg.queries_per_item, cfg.min_query_words, cfg.seed)
    new_pairs, new_held = _examples(new_items, rows, cfg.queries_per_item, cfg.min_query_words, cfg.seed)
    n_eval = min(cfg.eval_items, len(old_items))
    k = cfg.eval_k
    before = {"old": _recall(teacher, old_items[:n_eval], old_held[:n_eval], k),
              "new": _recall(teacher, new_items, new_held, k)}
    echo(f"folded: {len(old_ids)} old + {len(added)} added items; base + adapter R@{k} old {before['old']:.3f}, "
         f"added {before['new']:.3f}")

    student = copy.deepcopy(teacher.model)
    stats: dict[str, Any] = {"epochs": 0, "samples": 0, "train_seconds": 0.0}
    if cfg.epochs and old_pairs + new_pairs:
        cache = StateCache.build(teacher.encoder, [t for t, _ in old_pairs + new_pairs])
        cidx = cache.index()
        parts = [make_samples("old", [t for t, _ in old_pairs], [r for _, r in old_pairs], cidx)]
        if new_pairs:
            parts.append(make_samples("new", [t for t, _ in new_pairs], [r for _, r in new_pairs], cidx))
        for p in teacher.model.parameters():
            p.requires_grad_(False)
        for p in student.parameters():
            p.requires_grad_(True)
        student.train()
        opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
        tables = [t.to(device) for t in teacher.index.tables()]
        t1, losses = time.perf_counter(), []
        for epoch in range(1, cfg.epochs + 1):
            for batch, _ in batches(parts, cfg.batch_size, rng):
                q, st, mk = (x.to(device) for x in cache.batch(batch.rows))
                path = torch.from_numpy(teacher.index.paths[batch.items]).to(device)
                if batch.source == "old":
                    loss = cfg.kl_weight * _kl(student, teacher.model, q, st, mk, path, cfg.temperature)
                else:
                    loss = tree_loss(student, tables, q, st, mk, path)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                opt.step()
                losses.append(float(loss.detach()))
                stats["samples"] += len(batch)
            stats["epochs"] = epoch
        stats["train_seconds"] = round(time.perf_counter() - t1, 2)
        stats["final_loss"] = float(np.mean(losses[-20:])) if losses else 0.0
    student.eval()
    fold_model, teacher.model = teacher.model, student
    after = {"old": _recall(teacher, old_items[:n_eval], old_held[:n_eval], k),
             "new": _recall(teacher, new_items, new_held, k)}
    ids_kept = all(tuple(teacher.id_map.codes(i)) == c for i, c in codes_before.items())
    exact = _recall(teacher, old_items[:n_eval] + new_items, [it.text() for it in old_items[:n_eval] + new_items], 1)
    echo(f"distilled ({stats['epochs']} epochs, {stats['samples']} samples): R@{k} old {after['old']:.3f}, "
         f"added {after['new']:.3f}; IDs unchanged: {ids_kept}")
    summary = {"kind": "tree-merge", "config": cfg.model_dump(mode="json"), "old_items": len(old_ids),
               "added_items": len(added), "distilled_old_items": len(old_items), **stats,
               "metrics": {f"old_r{k}_before": before["old"], f"old_r{k}": after["old"],
                           f"added_r{k}_before": before["new"], f"added_r{k}": after["new"],
                           "ids_unchanged": float(ids_kept), "exact_match": exact},
               "merged_from": {"base": str(base_dir), "adapter": str(adapter_dir) if adapter_dir else "",
                               "adapter_manifest": teacher.manifest.get("adapter", {})},
               "seconds": round(time.perf_counter() - t0, 2)}
    del fold_model
    training = {**(teacher.manifest.get("training") or {}), "merge": summary}
    save_tree_model(Path(out), student, teacher.encoder, teacher.id_map,
                    base_fingerprint=teacher.manifest["encoder"]["base_fingerprint"], training=training)
    _write_summary(Path(base_dir), Path(out), summary, exact)
    return summary


def _write_summary(base_dir: Path, out: Path, merge: dict[str, Any], exact: float) -> None:
    """``training_summary.json`` of the new base: the previous base's (its fusion holdout stays
    valid: distillation trains on no query of the query set), with this merge and the merged
    model's doc→ID exact-match as its final memorisation (what the base pipeline's gate reads)."""
    import json

    from tandem.training.report import SUMMARY_FILE

    try:
        previous = json.loads((base_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        previous = {}
    summary = {**(previous if isinstance(previous, dict) else {}), "merge": merge,
               "final_memorisation": {"exact_match": exact, "items": merge["old_items"] + merge["added_items"],
                                      "measured_on": "sampled old + all added items"}}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
