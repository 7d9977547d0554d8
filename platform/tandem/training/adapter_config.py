"""What an hourly adapter run is given: its configuration and where its training text comes from.

Shared by both adapter trainers (:mod:`tandem.training.t5_adapter` for v1 bases,
:mod:`tandem.training.tree_adapter_train` for v2) and by the dispatcher
:func:`tandem.training.adapter.train_adapter` above them, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.training.peft_methods import PeftSpec


class AdapterConfig(BaseModel):
    """Everything an adapter run depends on (stored in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    peft: PeftSpec = Field(default_factory=PeftSpec)
    """PEFT method; must be mergeable (``lora`` or ``ia3``) to be served."""
    replay: float | None = Field(default=None, ge=0, lt=1)
    """Share of each epoch's examples drawn from old items (0 = no replay); ``None`` — the base
    kind's measured default (:meth:`replay_share`): 0.2 for a v1 base (the chapter's 80/20), 0.35
    for a v2 base. v1, measured on the ci base over 567 items with 33 fresh ones (dev queries,
    ``bench.adapter``): 0.2 costs about 7 points of old-item R@10; 0.5 with
    ``queries_per_item=8`` costs none at fresh R@10 0.88 — a small base needs more replay. v2:
    see ``replay_source``."""
    ewc_lambda: float = Field(default=0.0, ge=0)
    """EWC strength λ on the Fisher normalised to mean 1 (0 = off; LoRA only)."""
    distill: float = Field(default=0.0, ge=0)
    """Weight of the distillation loss on replayed old items: KL from the base's output
    distribution to the adapted model's (0 = hard-label replay only). Measured as above
    (replay 0.2, template pseudo-queries): 1.0 halves the old-item R@10 loss (9.7 → 5.0
    points) for 3 points of fresh R@10; more replay did better at the same cost, so it is
    off by default."""
    fisher_samples: int = Field(default=256, ge=1)
    """Old-item examples the diagonal Fisher is estimated on (one backward pass each)."""
    epochs: int = Field(default=20, ge=1)
    """Passes over the new items' examples."""
    lr: float = Field(default=1e-3, gt=0)
    """AdamW peak learning rate of the adapter weights. Measured on the ci base (278 old, 22
    fresh items, replay 20 %): 3e-3 also reaches fresh R@10 1.0 but costs 3.6 points of
    old-item R@10; 1e-3 costs 1.8; 5e-4 costs none but leaves fresh R@10 at 0.95."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay of the adapter weights."""
    batch_size: int = Field(default=64, ge=1)
    """Examples per optimiser step."""
    grad_clip: float = Field(default=1.0, gt=0)
    """Gradient-norm clip."""
    queries_per_item: int = Field(default=4, ge=0)
    """Pseudo-queries per new item (query→id examples); old items get half as many."""
    pseudo_queries: Literal["title", "template"] = "title"
    """Where pseudo-queries come from: ``title`` (word subsets and prefixes of the title) or
    ``template`` (``tandem.training.pseudo``: product type, brand + type, attribute phrases).
    Measured on the ci base (567 old, 33 fresh items, replay 0.2): templates, whose one- and
    two-word queries name whole product types, cost 9.7 points of old-item R@10."""
    min_query_words: int = Field(default=2, ge=1)
    """Pseudo-queries with fewer words are dropped (see :func:`pseudo_query_source`)."""
    eval_k: int = Field(default=10, ge=1)
    """Cut-off of the recall checks (R@k)."""
    tree_lr: float = Field(default=3e-4, gt=0)
    """Learning rate of a v2 (tree) base's adapter (LoRA on the ID decoder + the new rows). New
    items are already findable at assignment there, so the adapter only refines: measured on
    the demo's base (44 fresh items, replay 0.5), ``lr`` 1e-3 × 20 epochs forgot 6 points of
    old-item exact-match (the gate refused it); 3e-4 × 5 epochs forgot none (new R@10 0.955,
    old R@10 0.958 → 0.966) in 20 s."""
    tree_epochs: int = Field(default=5, ge=1)
    """Epochs of a v2 base's adapter (see ``tree_lr``)."""
    tree_scope: Literal["auto", "decoder", "items"] = "auto"
    """What a v2 base's adapter trains: ``decoder`` — LoRA on the ID decoder plus the new
    items' rows; ``items`` — the new items' rows only (the decoder, so every old item's score
    for every query, stays exactly the base's: forgetting is impossible by construction, and
    old queries only see the competition of the new items, as right after assignment); ``auto``
    — ``items``, unless the run carries the failed-query cycle's corrective pairs for old items,
    which only the decoder can learn (their rows are the base's), then ``decoder``. The
    new rows keep their assigned norms (they turn towards their queries, they do not grow):
    scores are dot products, so a row that grows outranks old items for every query. On Home
    Depot's fresh split without that constraint: fresh R@10 0.364 → 0.545, but old-item R@10
    −3.8 points and old titles' exact-match −0.094, all from new rows outranking old ones."""
    replay_from: Literal["random", "neighbours"] = "random"
    """Which old items a v2 adapter replays: ``random`` ones, or ``neighbours`` — old items from
    the new items' own leaves first (then random ones): with the decoder frozen, what old
    queries lose is new items outranking the old ones *they resemble*, so those are the old
    items whose queries must teach the new rows where not to go. Measured on Home Depot's fresh
    split with ``tree_scope=items`` and replay 0.5: old-item R@10 drop 1.1 points (1.7 with
    random replay at 0.2), but fresh R@10 0.337, below assignment alone (0.356): not the default."""
    replay_source: Literal["pseudo", "queries"] = "queries"
    """What a v2 adapter replays of the old items besides their titles: ``pseudo`` — title
    pseudo-queries; ``queries`` — the real training queries the base kept
    (``replay_queries.tsv``, written by ``tandem train generative``; pseudo-queries when the
    base has none). What old queries lose after an adapter is new items outranking the right
    old ones on *real* queries, so real queries are what teach the new rows where not to go.
    Measured on Home Depot's fresh split (stage-1 base, 2,807 new items, dev R@10 with
    ``bench.adapter``; base old R@10 0.4105; assignment alone: fresh 0.403, old −0.72 points):

    ==========================================  ==========  ==========
    scope, replay                               fresh R@10  old (drop)
    ==========================================  ==========  ==========
    ``decoder``, pseudo 0.2 (the old default)   0.475       −2.26
    ``items``, pseudo 0.2                       0.484       −2.15
    ``items``, queries 0.2                      0.428       −1.18
    ``decoder``, queries 0.2                    0.455       −1.73
    ``items``, queries 0.5 (random/neighbours)  0.317/0.315 −0.79/−0.75
    **``items``, queries 0.35 (the default)**   **0.382**   **−0.90**
    ==========================================  ==========  ==========

    The default is the only row that meets both bars (fresh ≥ 0.8 × old R@10, old drop ≤ 1
    point)."""
    tree_items_lr: float | None = Field(default=None, gt=0)
    """Learning rate of the new items' rows (default: ``tree_lr`` / 10 with ``decoder``
    scope, ``tree_lr`` with ``items`` scope, where the rows are all that learns)."""
    eval_old_items: int = Field(default=500, ge=1)
    """Old items the forgetting checks sample (all when fewer)."""
    num_beams: int = Field(default=10, ge=1)
    """Beam width of the recall checks."""
    seed: int = 13
    """Seed of every random choice."""
    threads: int | None = Field(default=None, ge=1)
    """Torch CPU threads while training (see ``TrainConfig.threads``)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Autocast dtype, as in ``TrainConfig.precision``."""

    def replay_share(self, kind: Literal["t5", "tree"]) -> float:
        """The replay share a base of ``kind`` trains with: ``replay`` when set, else its default."""
        if self.replay is not None:
            return self.replay
        return 0.35 if kind == "tree" else 0.2

    def scope(self, corrective: bool) -> Literal["decoder", "items"]:
        """The v2 scope a run trains (``tree_scope``, resolving ``auto``; see there)."""
        if self.tree_scope != "auto":
            return self.tree_scope
        return "decoder" if corrective else "items"


def adapter_config(overrides: dict[str, object] | None = None) -> AdapterConfig:
    """An :class:`AdapterConfig` from ``--set`` style overrides; ``peft.rank=8`` sets a nested field.

    Invalid values raise :class:`InvalidInput` naming the field.
    """
    from pydantic import ValidationError

    data: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if rest:
            if head != "peft":
                raise InvalidInput(f"`--set`: `{key}` is not a setting (only `peft.*` settings are nested)")
            data.setdefault("peft", {})[rest] = value
        else:
            data[key] = value
    try:
        return AdapterConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"`{field}`: {err['msg']}") from None


def title_queries(item: Item, max_count: int, seed: int = 0) -> list[str]:
    """Query-like strings from the title alone: the title, leave-one-word-out subsets (each
    shuffled) and short prefixes — how shoppers shorten and reorder a product name."""
    words = item.title.lower().split()
    if not words or max_count < 1:
        return []
    rng = np.random.default_rng([seed, len(words), sum(map(ord, item.item_id))])
    out = [" ".join(words)]
    head = words[:8]  # long titles: product name and key attributes come first
    variants = []
    for drop in range(len(head)):
        kept = [w for j, w in enumerate(head) if j != drop]
        if kept:
            variants.append(" ".join(kept[i] for i in rng.permutation(len(kept))))
    variants += [" ".join(words[:n]) for n in (2, 3, 4) if n < len(words)]
    for i in rng.permutation(len(variants)):
        if variants[i] not in out:
            out.append(variants[i])
    return out[:max_count]


def pseudo_query_source(kind: str = "title", min_words: int = 1) -> tuple[Callable[[Item, int, int], list[str]],
                                                                         str]:
    """The pseudo-query generator named by ``kind`` and a description of it.

    ``title``: :func:`title_queries`. ``template``:
    :func:`tandem.training.pseudo.template_queries`. Queries shorter than ``min_words``
    words are dropped: a one-word query ("hose") names a whole product type, and teaching
    the adapter to answer it with a *new* item pulls the old items' generic queries over to
    the new ones.
    """
    fn: Callable[[Item, int, int], list[str]] = title_queries
    name = "title_queries"
    if kind == "template":
        from tandem.training.pseudo import template_queries

        fn, name = (lambda item, n, seed: list(template_queries(item, n, seed=seed))), "pseudo.template_queries"
    if min_words <= 1:
        return fn, name

    def filtered(item: Item, n: int, seed: int) -> list[str]:
        # Ask for more than needed so the filter still leaves ``n`` when it can.
        return [q for q in fn(item, 3 * n + 3, seed) if len(q.split()) >= min_words][:n]

    return filtered, f"{name} (>= {min_words} words)"


def split_items(base_ids: set[str], new_items: Sequence[Item],
                old_items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """The new items (a later row of an item wins) and the old ones: base items not also new.

    :class:`InvalidInput` when nothing is new.
    """
    new: dict[str, Item] = {}
    for it in new_items:
        new[it.item_id] = it  # a later row (newer version) wins
    if not new:
        raise InvalidInput("`new_items` is empty: nothing was added or changed since the base")
    old = [it for it in old_items if it.item_id in base_ids and it.item_id not in new]
    return list(new.values()), old
