"""Hourly adapter training on a v2 (tree) base: new items findable at once, then refined.

1. **Assignment.** Each new item gets an ID in the reserved space of the leaf nearest to its
   embedding, and its item embedding starts at its own encoded text — so the base already
   retrieves it before any training (the ``assigned`` figures).
2. **Training.** LoRA (``peft``) on the decoder's linear layers plus the new items' rows,
   on doc→id and pseudo-query→id of the new items with ``replay`` old-item examples (the
   chapter's 80/20 continual-learning mix); the base's own weights and old rows stay frozen.
   The encoder stays frozen, so its states are encoded once.
   Corrective pairs (``extra_pairs``: query text → item id, from the failed-query cycle,
   :func:`tandem.failed.cycle.corrective_pairs`) join the new pairs, replay included, so a
   cycle's fixes reach the model with the next adapter even in an hour without new items.
3. **Checks** as in the v1 adapter: new/old-item R@k on held-out pseudo-queries and doc→id
   exact-match, before and after, with the same summary keys, so the CLI, the pipelines and
   the promotion gate treat both kinds alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parametrize

from tandem.catalog.item import Item
from tandem.generative.tree_artifact import TreeArtifact, append_items, load_tree_model, read_replay_queries
from tandem.generative.tree_decoding import tree_beam_search
from tandem.training.adapter_config import AdapterConfig, pseudo_query_source, split_items
from tandem.training.adapter_metrics import AdapterMetrics
from tandem.training.state_cache import StateCache
from tandem.training.tree_data import Samples, batches, make_samples


def _decode(art: TreeArtifact, texts: list[str], k: int, upper: int = 300) -> np.ndarray:
    enc = art.encoder
    out = np.full((len(texts), k), -1, np.int64)
    with torch.inference_mode():
        for s in range(0, len(texts), 64):
            ids, mask = enc.tokenize(texts[s : s + 64])
            st = enc.states(ids, mask)
            nodes, _ = tree_beam_search(art.model, art.index, enc.pool(st, mask), st, mask,
                                        beams=[upper] * (art.index.length - 1) + [k])
            out[s : s + len(nodes), : nodes.shape[1]] = nodes.numpy()
    return out


def _checks(art: TreeArtifact, items: list[Item], eval_queries: list[str], k: int, prefix: str) -> dict[str, float]:
    if not items:  # an hour without new items (corrective pairs only): nothing new to find
        return {f"{prefix}_r{k}": 0.0, f"{prefix}_exact_match": 0.0} if prefix == "new" else {}
    rows = {iid: i for i, iid in enumerate(art.id_map.item_ids())}
    want = np.array([rows.get(it.item_id, -2) for it in items])
    hits = _decode(art, eval_queries, k)
    top1 = _decode(art, [it.text() for it in items], 1)[:, 0]
    return {f"{prefix}_r{k}": float((hits == want[:, None]).any(1).mean()),
            f"{prefix}_exact_match": float((top1 == want).mean())}


def _corrective_r(art: TreeArtifact, pairs: Sequence[tuple[str, int]], k: int, limit: int = 500) -> float:
    """R@k of the corrective queries (any of a query's target items in the top ``k``)."""
    targets: dict[str, set[int]] = {}
    for q, row in pairs:
        targets.setdefault(q, set()).add(row)
    queries = sorted(targets)[:limit]
    if not queries:
        return 0.0
    hits = _decode(art, queries, k)
    return float(np.mean([bool(targets[q] & set(h.tolist())) for q, h in zip(queries, hits, strict=True)]))


def _replay_pick(old: list[Item], new_codes: Sequence[Sequence[int]], id_map: Any, n: int, how: str,
                 rng: np.random.Generator) -> list[int]:
    """Indices of ``n`` old items to replay: random, or (``neighbours``) those sharing a leaf
    with a new item first, in random order, then random others."""
    if n <= 0:
        return []
    if how != "neighbours":
        return list(rng.choice(len(old), n, replace=False).tolist())
    order = rng.permutation(len(old))
    leaves = {tuple(c[:-1]) for c in new_codes}
    codes = id_map.as_array()
    row = {iid: i for i, iid in enumerate(id_map.item_ids())}
    near = np.array([tuple(codes[row[old[i].item_id]][:-1].tolist()) in leaves for i in order], bool)
    return list(np.concatenate([order[near], order[~near]])[:n].tolist())


class _NewRows(torch.nn.Module):
    """The item table as the base's rows followed by the trainable new rows (a parametrization of
    the table): only the new rows get gradients and optimiser state. Training the whole table
    with a hook zeroing the old rows' gradients spent half of every step in AdamW over all
    ~57k × 384 rows and a third in their gradient."""

    def __init__(self, new: torch.Tensor) -> None:
        super().__init__()
        self.rows = torch.nn.Parameter(new.clone())

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        return torch.cat([table[: len(table) - len(self.rows)], self.rows])


def train_tree_adapter(base_dir: Path, new_items: Sequence[Item], old_items: Sequence[Item], out: Path,
                       cfg: AdapterConfig, *, base_ref: str = "", echo: Callable[[str], None] = print,
                       extra_pairs: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Train an adapter for ``new_items`` and the corrective ``extra_pairs`` (query text, item
    id of the base; others are skipped) on the v2 base in ``base_dir``; write it to ``out``;
    return the summary."""
    from tandem.generative.model import pick_device
    from tandem.generative.tree_adapter import base_identity, save_tree_adapter, wrap_lora

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    art = load_tree_model(Path(base_dir), device)
    identity = base_identity(art.manifest, art.id_map)
    id_map, k = art.id_map, cfg.eval_k
    base_rows = {iid: i for i, iid in enumerate(id_map.item_ids())}
    extra = [(q, base_rows[i]) for q, i in dict.fromkeys(extra_pairs) if i in base_rows and q.strip()]
    if extra and not new_items:  # corrective pairs only: every old item may be replayed
        new: list[Item] = []
        old = [it for it in old_items if it.item_id in base_rows]
    else:
        new, old = split_items(set(id_map.item_ids()), new_items, old_items)
    old_eval = [old[i] for i in np.sort(rng.choice(len(old), min(cfg.eval_old_items, len(old)), replace=False))]
    queries, query_source = pseudo_query_source(cfg.pseudo_queries, cfg.min_query_words)
    n_q = cfg.queries_per_item

    def eval_query(it: Item) -> str:  # the held-out phrasing: the one after those trained on
        qs = queries(it, n_q + 1, cfg.seed)
        return qs[n_q] if len(qs) > n_q else it.title

    new_eval, old_eval_q = [eval_query(it) for it in new], [eval_query(it) for it in old_eval]
    t0 = time.perf_counter()
    before = _checks(art, new, new_eval, k, "new") | _checks(art, old_eval, old_eval_q, k, "old")
    corrective = {"pairs": len(extra), f"r{k}_before": _corrective_r(art, extra, k)} if extra else {}
    # assignment: IDs in the reserved space, rows at the items' own embeddings
    known = set(id_map.item_ids())
    codes = id_map.assign(new) if new else {}
    fresh = [it for it in new if it.item_id not in known]
    vecs, _ = art.encoder.encode([it.text() for it in fresh]) if fresh else (np.zeros((0, art.encoder.dim)), None)
    n_base = len(art.model.nodes[-1])
    append_items(art, [codes[it.item_id] for it in fresh], torch.from_numpy(np.asarray(vecs, np.float32)))
    assigned = _checks(art, new, new_eval, k, "new")
    check_s = time.perf_counter() - t0
    echo(f"IDs: {len(new)} new/changed items ({len(fresh)} new) in the reserved space; new-item R@{k} "
         f"{before.get(f'new_r{k}', 0.0):.3f} -> {assigned[f'new_r{k}']:.3f} at assignment, before training")

    # training data: new docs + pseudo-queries, replayed old docs + pseudo-queries, states cached
    rows = {iid: i for i, iid in enumerate(id_map.item_ids())}
    new_pairs = [(it.text(), rows[it.item_id]) for it in new] + [
        (q, rows[it.item_id]) for it in new for q in queries(it, n_q, cfg.seed)]
    new_pairs += extra
    share, scope = cfg.replay_share("tree"), cfg.scope(corrective=bool(extra))
    n_old = int(len(new_pairs) * share / (1 - share))
    new_codes = [codes[it.item_id] for it in new]
    logged = read_replay_queries(Path(base_dir)) if cfg.replay_source == "queries" and old and n_old else []
    if logged:  # half titles, half real queries of old items (the preferred items' first)
        pick = _replay_pick(old, new_codes, id_map, len(old), cfg.replay_from, rng)
        rank = {old[i].item_id: r for r, i in enumerate(pick)}
        real = sorted((p for p in logged if p[1] in rank), key=lambda p: rank[p[1]])[: n_old - n_old // 2]
        old_pairs = [(old[i].text(), rows[old[i].item_id]) for i in pick[: n_old // 2]] + [
            (q, rows[i]) for q, i in real]
    else:
        n_pick = min(len(old), max(n_old // 2, 1)) if old and n_old else 0
        pick = _replay_pick(old, new_codes, id_map, n_pick, cfg.replay_from, rng)
        old_pairs = [(old[i].text(), rows[old[i].item_id]) for i in pick] + [
            (q, rows[old[i].item_id]) for i in pick for q in queries(old[i], max(n_q // 2, 1), cfg.seed)]
        old_pairs = old_pairs[:n_old]
    cache = StateCache.build(art.encoder, [t for t, _ in new_pairs + old_pairs])
    cidx = cache.index()
    parts: list[Samples] = [make_samples("new", [t for t, _ in new_pairs], [i for _, i in new_pairs], cidx)]
    if old_pairs:
        parts.append(make_samples("old", [t for t, _ in old_pairs], [i for _, i in old_pairs], cidx))

    model = art.model
    for p in model.parameters():
        p.requires_grad_(False)
    lora = wrap_lora(model, cfg.peft.rank)
    overlay = _NewRows(model.nodes[-1].data[n_base:])
    last = str(len(model.nodes) - 1)
    parametrize.register_parametrization(model.nodes, last, overlay)
    new_rows = overlay.rows
    if scope == "items":  # LoRA stays at its zero start (B = 0): the decoder is the base's
        for p in lora.parameters():
            p.requires_grad_(p is new_rows)
    trainable = [p for p in lora.parameters() if p.requires_grad]
    items_lr = cfg.tree_items_lr or (cfg.tree_lr if scope == "items" else cfg.tree_lr * 0.1)
    groups = [{"params": [p for p in trainable if p is not new_rows], "lr": cfg.tree_lr},
              {"params": [new_rows], "lr": items_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    norms = new_rows.data.norm(dim=1, keepdim=True).clone() if scope == "items" else None
    from tandem.generative.tree_model import tree_loss

    t1, samples, epochs = time.perf_counter(), 0, 0
    for epochs in range(1, cfg.tree_epochs + 1):  # noqa: B007 (the summary reports the last epoch)
        model.train()
        for batch, _ in batches(parts, cfg.batch_size, rng):
            q, st, mk = cache.batch(batch.rows)
            path = torch.from_numpy(art.index.paths[batch.items])
            loss = tree_loss(model, art.index.tables(), q, st, mk, path)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            if norms is not None:  # items scope: new rows turn, they do not grow (see AdapterConfig)
                with torch.no_grad():
                    new_rows.mul_(norms / new_rows.norm(dim=1, keepdim=True).clamp_min(1e-12))
            samples += len(batch)
    train_s = time.perf_counter() - t1
    parametrize.remove_parametrizations(model.nodes, last, leave_parametrized=True)  # a plain table again
    items_table = model.nodes[-1]
    model.eval()
    t2 = time.perf_counter()
    after = _checks(art, new, new_eval, k, "new") | _checks(art, old_eval, old_eval_q, k, "old")
    check_s += time.perf_counter() - t2
    metrics = AdapterMetrics.from_checks(k, before, after, assigned).as_dict()
    n_trainable = sum(p.numel() for p in trainable)  # LoRA and the new rows
    total = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in art.encoder.model.parameters())
    summary = {"config": cfg.model_dump(mode="json"), "kind": "tree", "device": str(device),
               "new_items": len(new), "changed_items": len(new) - len(fresh), "old_items": len(old),
               "old_items_checked": len(old_eval), "query_source": query_source,
               "examples_new": len(new_pairs) - len(extra), "examples_corrective": len(extra),
               "corrective": corrective | ({f"r{k}": _corrective_r(art, extra, k)} if extra else {}),
               "replay": share, "scope": scope, "replay_pool": len(old_pairs), "replay_queries": len(logged),
               "parameters": {"trainable": n_trainable, "total": total, "trainable_share": n_trainable / total},
               "epochs": epochs, "samples": samples, "train_seconds": round(train_s, 2), "fisher_seconds": 0.0,
               "check_seconds": round(check_s, 2), "samples_per_s": round(samples / max(train_s, 1e-9), 1),
               "id_map_version": id_map.version, "free_slots": id_map.free_slots(), "out": str(out),
               "metrics": metrics, "base_ref": base_ref}
    save_tree_adapter(out, lora, items_table.data[n_base:], id_map, rank=cfg.peft.rank,
                      base={**identity, "ref": base_ref},
                      new_items=[it.item_id for it in new], metrics=metrics,
                      training={k2: v for k2, v in summary.items() if k2 != "metrics"})
    return summary
