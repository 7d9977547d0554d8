"""Hourly adapters: make new items retrievable on a frozen base model (seed chapter 5.2.4, 5.5).

``train_adapter`` is the whole continual-learning step of the adapter pipeline:

1. **IDs.** Items added since the base get IDs from the reserved code space of their
   nearest leaf (:meth:`tandem.ids.IdMap.assign`); items that changed keep their ID. No
   existing ID moves and no token is added (the tokenizer covers the reserved codes), so
   the adapter only has to teach new (text → ID) bindings.
2. **Training.** A LoRA adapter (any mergeable :class:`PeftSpec`) on the frozen base,
   trained on the new items' doc→id and pseudo-query→id examples, with **replay** of old
   items mixed into every epoch (``replay`` = their share of examples, 20 % by default:
   the chapter's 80/20) and optional **EWC** on the effective weights
   (:mod:`tandem.training.ewc`).
3. **Checks.** Before vs after, on the same queries: new-item R@10 (one held-out
   pseudo-query per item, a phrasing not trained on) and doc→id exact-match, old-item R@10
   and doc→id exact-match on a sample of old items (forgetting = the exact-match lost).
4. **Artifact.** Adapter weights + extended ID map + manifest (base fingerprint, metrics),
   see :mod:`tandem.generative.adapter_artifact`.

Pseudo-queries for new (and replayed) items come from :func:`title_queries` (word subsets
and prefixes of the title) by default, or from ``tandem.training.pseudo.template_queries``
(``pseudo_queries="template"``); too-short ones are dropped (``min_query_words``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.training.objectives import Example, Task, doc2id, multitask_loss, q2id
from tandem.training.peft_methods import PeftSpec

log = logging.getLogger(__name__)

#: Loss weights of adapter training: memorising the text and answering queries count alike.
ADAPTER_WEIGHTS = {Task.DOC2ID: 1.0, Task.Q2ID: 1.0}


class AdapterConfig(BaseModel):
    """Everything an adapter run depends on (stored in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    peft: PeftSpec = Field(default_factory=PeftSpec)
    """PEFT method; must be mergeable (``lora`` or ``ia3``) to be served."""
    replay: float = Field(default=0.2, ge=0, lt=1)
    """Share of each epoch's examples drawn from old items (0 = no replay). The default is
    the chapter's 80/20. Measured on the ci base over 567 items with 33 fresh ones (dev
    queries, ``bench.adapter``): 0.2 costs about 7 points of old-item R@10; 0.5 with
    ``queries_per_item=8`` costs none at fresh R@10 0.88 — a small base needs more replay."""
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


def select_items(base_dir: Path, *, catalog: Path | None = None, new_items: Path | None = None,
                 store: Path | None = None, since_version: int | None = None) -> tuple[list[Item], list[Item]]:
    """The new/changed items and the old items of an adapter run, from files or the catalog store.

    * ``catalog`` (+ optional ``new_items``): the new items are those of ``new_items``, or
      else the catalog items the base's ID map does not know (added since the base).
    * ``store`` (+ optional ``since_version``): the items upserted after that snapshot of
      the store, or else the live items the base does not know. Deletions cannot be
      unlearnt by an adapter; they are dropped at serving time by the catalog filter and
      for good at the next base rebuild.

    Old items are the live catalog's items that the base knows and that are not new.
    """
    if (catalog is None) == (store is None):
        raise InvalidInput("give `--catalog` or `--store` (the old items for replay and the forgetting check)")
    if since_version is not None and store is None:
        raise InvalidInput("`--since-version` needs `--store`")
    if new_items is not None and store is not None:
        raise InvalidInput("`--new-items` goes with `--catalog`; with `--store` use `--since-version`")
    known = set(_base_item_ids(Path(base_dir)))
    if store is not None:
        from tandem.streams.store import CatalogStore

        with CatalogStore(store) as st:
            live = list(st.items())
            if since_version is not None:
                changed = {c.item_id for c in st.changes_since(since_version) if c.op == "upsert"}
                new = [it for it in live if it.item_id in changed]
            else:
                new = [it for it in live if it.item_id not in known]
    else:
        from tandem.catalog.loaders import load_items

        live = load_items(catalog).items  # type: ignore[arg-type]
        if new_items is not None:
            new = load_items(new_items).items
        else:
            new = [it for it in live if it.item_id not in known]
    new_ids = {it.item_id for it in new}
    old = [it for it in live if it.item_id in known and it.item_id not in new_ids]
    return new, old


def _base_item_ids(base_dir: Path) -> list[str]:
    """The item ids a base model folder (v1 T5 or v2 tree) can name."""
    from tandem.generative.tree_artifact import is_tree_folder

    if is_tree_folder(base_dir):
        from tandem.ids.idmap import IdMap

        return IdMap.load(str(base_dir / "idmap")).item_ids()
    from tandem.generative.artifacts import read_manifest
    from tandem.generative.idmap import load_id_map

    return load_id_map(base_dir / read_manifest(base_dir)["id_map"]["path"]).item_ids()


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

    ``title``: :func:`title_queries`. ``template``: ``tandem.training.pseudo.template_queries``
    (falls back to ``title`` when that module is absent). Queries shorter than ``min_words``
    words are dropped: a one-word query ("hose") names a whole product type, and teaching
    the adapter to answer it with a *new* item pulls the old items' generic queries over to
    the new ones.
    """
    fn: Callable[[Item, int, int], list[str]] = title_queries
    name = "title_queries"
    if kind == "template":
        try:
            template = importlib.import_module("tandem.training.pseudo").template_queries
            fn, name = (lambda item, n, seed: list(template(item, n, seed=seed))), "pseudo.template_queries"
        except (ImportError, AttributeError):
            log.warning("tandem.training.pseudo is not available; using title queries")
    if min_words <= 1:
        return fn, name

    def filtered(item: Item, n: int, seed: int) -> list[str]:
        # Ask for more than needed so the filter still leaves ``n`` when it can.
        return [q for q in fn(item, 3 * n + 3, seed) if len(q.split()) >= min_words][:n]

    return filtered, f"{name} (>= {min_words} words)"


def _split_items(base_ids: set[str], new_items: Sequence[Item], old_items: Sequence[Item]) -> tuple[list[Item],
                                                                                                      list[Item]]:
    new: dict[str, Item] = {}
    for it in new_items:
        new[it.item_id] = it  # a later row (newer version) wins
    if not new:
        raise InvalidInput("`new_items` is empty: nothing was added or changed since the base")
    old = [it for it in old_items if it.item_id in base_ids and it.item_id not in new]
    return list(new.values()), old


def train_adapter(base_dir: Path, new_items: Sequence[Item], old_items: Sequence[Item], out: Path,
                  config: AdapterConfig | None = None, *, base_ref: str = "", progress: bool = False,
                  echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train an adapter for ``new_items`` on the base model in ``base_dir``; write it to ``out``.

    ``old_items`` are the base's catalog items (for replay, EWC and the forgetting checks);
    items also in ``new_items`` count as changed, not old. Returns the summary (metrics,
    timings, parameter counts), also stored in ``out/manifest.json``.
    """
    import torch

    from tandem.generative.tree_artifact import is_tree_folder

    cfg = config or AdapterConfig()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if is_tree_folder(Path(base_dir)):
            from tandem.training.tree_adapter_train import train_tree_adapter

            return train_tree_adapter(Path(base_dir), new_items, old_items, Path(out), cfg, base_ref=base_ref,
                                      echo=echo or (lambda _m: None))
        return _AdapterRun(Path(base_dir), cfg, echo or (lambda _m: None), progress).run(new_items, old_items,
                                                                                        Path(out), base_ref)
    finally:
        torch.set_num_threads(threads)


class _AdapterRun:
    """One adapter training run (state shared by its steps)."""

    def __init__(self, base_dir: Path, cfg: AdapterConfig, echo: Callable[[str], None], progress: bool) -> None:
        from tandem.generative.artifacts import load_artifact
        from tandem.generative.model import pick_device, use_bf16

        if not cfg.peft.mergeable:
            raise InvalidInput(f"`peft.method` {cfg.peft.method} cannot be merged for serving; use lora or ia3")
        if cfg.ewc_lambda > 0 and cfg.peft.method != "lora":
            raise InvalidInput("`ewc_lambda` > 0 needs `peft.method` lora (EWC acts on LoRA's weight update)")
        self.cfg, self.echo, self.progress = cfg, echo, progress
        self.device = pick_device(cfg.device)
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.artifact = load_artifact(base_dir, self.device)
        self.tok = self.artifact.tokenizer
        self.text_len = self.artifact.max_input_length - 1
        self.queries, self.query_source = pseudo_query_source(cfg.pseudo_queries, cfg.min_query_words)

    # -- examples ---------------------------------------------------------------------------

    def _examples(self, items: Sequence[Item], codes: Sequence[Sequence[int]], n_queries: int,
                  first_index: int) -> tuple[list[Example], list[Example]]:
        """doc→id examples (one per item) and pseudo-query→id examples (``n_queries`` each)."""
        texts = self.tok.encode_texts([it.text() for it in items], self.text_len)
        docs = [doc2id(self.tok, t, c, first_index + i) for i, (t, c) in enumerate(zip(texts, codes, strict=True))]
        pairs = [(q, i) for i, it in enumerate(items) if n_queries > 0
                 for q in self.queries(it, n_queries, self.cfg.seed)]
        encoded = self.tok.encode_texts([q for q, _ in pairs], self.text_len) if pairs else []
        qs = [q2id(self.tok, e, codes[i], first_index + i) for e, (_, i) in zip(encoded, pairs, strict=True)]
        return docs, qs

    # -- checks -----------------------------------------------------------------------------

    def _eval_query(self, item: Item) -> str:
        """A held-out pseudo-query: the one after those trained on (the title when there is none).

        Training uses the first ``queries_per_item`` queries of an item (old items: half as
        many), so this phrasing was never seen in training.
        """
        n = self.cfg.queries_per_item
        queries = self.queries(item, n + 1, self.cfg.seed)
        return queries[n] if len(queries) > n else item.title

    def _checks(self, artifact: Any, new: list[Item], old: list[Item], new_codes: list[Sequence[int]],
                old_codes: list[Sequence[int]]) -> dict[str, float]:
        """R@k on held-out pseudo-queries and doc→id exact-match, for new and (sampled) old items."""
        from tandem.generative.retriever import GenerativeRetriever
        from tandem.training.verify import verify_memorisation

        retriever = GenerativeRetriever.from_artifact(artifact, num_beams=max(self.cfg.num_beams, self.cfg.eval_k),
                                                      normalize="level")
        out: dict[str, float] = {}
        for name, items, codes in (("new", new, new_codes), ("old", old, old_codes)):
            if not items:
                continue
            hits = retriever.retrieve([self._eval_query(it) for it in items], self.cfg.eval_k)
            found = [it.item_id in {h.item_id for h in hs} for it, hs in zip(items, hits, strict=True)]
            out[f"{name}_r{self.cfg.eval_k}"] = float(np.mean(found))
            docs, _ = self._examples(items, codes, 0, 0)
            report = verify_memorisation(artifact.model, self.tok, docs, self.device, autocast=self.bf16)
            out[f"{name}_exact_match"] = report.exact_match
        return out

    # -- the run ----------------------------------------------------------------------------

    def run(self, new_items: Sequence[Item], old_items: Sequence[Item], out: Path, base_ref: str) -> dict[str, Any]:
        import torch

        from tandem.generative.adapter_artifact import finish_adapter_artifact
        from tandem.generative.artifacts import GenerativeArtifact
        from tandem.training.peft_methods import apply_peft, merge, save_adapter, trainable_parameters

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        base, id_map = self.artifact, self.artifact.id_map
        new, old = _split_items(set(id_map.item_ids()), new_items, old_items)
        if len(old) > cfg.eval_old_items:
            old_eval = [old[i] for i in np.sort(rng.choice(len(old), cfg.eval_old_items, replace=False))]
        else:
            old_eval = list(old)
        old_eval_codes = [id_map.codes(it.item_id) for it in old_eval]

        t0 = time.perf_counter()
        known_new = [it for it in new if it.item_id in id_map]
        before = self._checks(base, known_new, old_eval, [id_map.codes(it.item_id) for it in known_new],
                              old_eval_codes)
        # Items the base cannot name are never retrieved or memorised: 0 by definition.
        share = len(known_new) / len(new)
        before[f"new_r{cfg.eval_k}"] = before.get(f"new_r{cfg.eval_k}", 0.0) * share
        before["new_exact_match"] = before.get("new_exact_match", 0.0) * share
        check_s = time.perf_counter() - t0

        free_before = id_map.free_slots()
        assigned = id_map.assign(new)
        new_codes = [assigned[it.item_id] for it in new]
        self.echo(f"IDs: {len(new)} new/changed items ({len(new) - len(known_new)} new) placed in the reserved "
                  f"space; free slots {free_before} -> {id_map.free_slots()}, ID map v{id_map.version}")

        new_docs, new_queries = self._examples(new, new_codes, cfg.queries_per_item, 0)
        old_codes = [id_map.codes(it.item_id) for it in old]
        old_docs, old_queries = self._examples(old, old_codes, max(cfg.queries_per_item // 2, 1) if old else 0,
                                               len(new))
        replay_pool = old_docs + old_queries

        fisher = None
        t_fisher = time.perf_counter()
        if cfg.ewc_lambda > 0:
            from tandem.training.ewc import fisher_diagonal

            if not replay_pool:
                raise InvalidInput("`ewc_lambda` > 0 needs `old_items` to estimate the Fisher information on")
            pick = rng.choice(len(replay_pool), min(cfg.fisher_samples, len(replay_pool)), replace=False)
            fisher = fisher_diagonal(base.model, [replay_pool[i] for i in pick], self.tok.pad_id, self.device,
                                     cfg.peft.target_modules)
        fisher_s = time.perf_counter() - t_fisher

        model = apply_peft(base.model, cfg.peft)
        model.tandem_spec = cfg.peft
        params = trainable_parameters(model)
        self.echo(f"{cfg.peft.method}: {params['trainable']:,} trainable of {params['total']:,} parameters "
                  f"({100 * params['trainable_share']:.2f} %)")
        ewc = None
        if fisher is not None:
            from tandem.training.ewc import LoraEWC

            ewc = LoraEWC(model, fisher, cfg.ewc_lambda)
        epochs, train_s, samples = self._train(model, new_docs + new_queries, replay_pool, ewc, rng, len(new))

        # Save the adapter tensors now: merging for the checks folds them into the base.
        save_adapter(model, cfg.peft, out)
        after_art = GenerativeArtifact(model=merge(model), tokenizer=self.tok, id_map=id_map, manifest=base.manifest)
        t1 = time.perf_counter()
        after = self._checks(after_art, new, old_eval, new_codes, old_eval_codes)
        check_s += time.perf_counter() - t1
        k = cfg.eval_k
        metrics = {
            f"new_r{k}_before": before[f"new_r{k}"], f"new_r{k}": after[f"new_r{k}"],
            "new_exact_match_before": before["new_exact_match"], "new_exact_match": after["new_exact_match"],
        }
        if old_eval:
            metrics |= {
                f"old_r{k}_before": before[f"old_r{k}"], f"old_r{k}": after[f"old_r{k}"],
                "old_exact_match_before": before["old_exact_match"], "old_exact_match": after["old_exact_match"],
                "forgetting": before["old_exact_match"] - after["old_exact_match"],
                f"old_r{k}_drop": before[f"old_r{k}"] - after[f"old_r{k}"],
            }
        summary = {
            "config": cfg.model_dump(mode="json"), "device": str(self.device), "bf16_autocast": self.bf16,
            "new_items": len(new), "changed_items": len(known_new), "old_items": len(old),
            "old_items_checked": len(old_eval), "query_source": self.query_source,
            "examples_new": len(new_docs) + len(new_queries), "replay_pool": len(replay_pool),
            "parameters": params, "epochs": epochs, "samples": samples,
            "train_seconds": round(train_s, 2), "fisher_seconds": round(fisher_s, 2),
            "check_seconds": round(check_s, 2), "samples_per_s": round(samples / max(train_s, 1e-9), 1),
            "id_map_version": id_map.version, "free_slots": id_map.free_slots(),
        }
        finish_adapter_artifact(out, cfg.peft, id_map, base_manifest=base.manifest,
                                new_items=[it.item_id for it in new], metrics=metrics, training=summary,
                                base_ref=base_ref)
        return {"metrics": metrics, **summary, "out": str(out)}

    def _distill(self, model: Any, inputs: dict[str, Any], logits: Any, old_rows: list[bool]) -> Any:
        """KL(base ‖ adapted) on the replayed old-item rows of a batch, per target token.

        Replay with hard labels only keeps the gold ID on top; distilling the base's whole
        output distribution keeps the *ranking* of the other IDs too, which is what R@10
        on unseen phrasings of old queries depends on (exercise 5.4: distillation from the
        old model). The teacher is the same network with the adapter switched off.
        """
        import torch
        import torch.nn.functional as F

        rows = torch.tensor(old_rows, device=logits.device)
        if not bool(rows.any()):
            return None
        with torch.no_grad(), model.disable_adapter(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                                        enabled=self.bf16):
            teacher = model(input_ids=inputs["input_ids"][rows], attention_mask=inputs["attention_mask"][rows],
                            decoder_input_ids=inputs["decoder_input_ids"][rows]).logits
        mask = inputs["labels"][rows] != -100
        student = F.log_softmax(logits[rows].float(), -1)
        target = F.log_softmax(teacher.float(), -1)
        kl = (target.exp() * (target - student)).sum(-1)
        return (kl * mask).sum() / mask.sum().clamp(min=1)

    def _train(self, model: Any, new_examples: list[Example], replay_pool: list[Example], ewc: Any,
               rng: np.random.Generator, n_new: int) -> tuple[list[dict[str, Any]], float, int]:
        """Epochs over the new examples with ``replay`` share of old ones; returns records, seconds, samples."""
        import torch
        from tqdm.auto import tqdm

        from tandem.training.data import batches, collate

        cfg = self.cfg
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_replay = 0
        if replay_pool and cfg.replay > 0:
            n_replay = int(round(len(new_examples) * cfg.replay / (1 - cfg.replay)))
        order = rng.permutation(len(replay_pool)) if replay_pool else np.zeros(0, np.int64)
        cursor = 0
        records: list[dict[str, Any]] = []
        samples, seconds = 0, 0.0
        steps_per_epoch = -(-(len(new_examples) + n_replay) // cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        model.train()
        step = 0
        bar = tqdm(total=total_steps, disable=not self.progress, desc="adapter", unit="batch", leave=False)
        for epoch in range(cfg.epochs):
            # Walk through the old pool without replacement across epochs, so replay covers
            # as many different old items as the budget allows.
            take = []
            while len(take) < n_replay and len(order):
                chunk = order[cursor: cursor + n_replay - len(take)]
                take.extend(chunk.tolist())
                cursor += len(chunk)
                if cursor >= len(order):
                    order, cursor = rng.permutation(len(replay_pool)), 0
            examples = new_examples + [replay_pool[i] for i in take]
            losses, penalties, distills = [], [], []
            t0 = time.perf_counter()
            for batch in batches(examples, cfg.batch_size, rng):
                # Linear warm-up over the first 10 % of steps, then linear decay to 10 %.
                warm = max(1, total_steps // 10)
                scale = (step + 1) / warm if step < warm else max(0.1, 1 - (step - warm) / max(total_steps - warm, 1))
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * scale
                inputs = collate(batch, self.tok.pad_id, self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   decoder_input_ids=inputs["decoder_input_ids"]).logits
                loss, _ = multitask_loss(logits, inputs["labels"], inputs["tasks"], ADAPTER_WEIGHTS)
                if cfg.distill > 0:
                    kd = self._distill(model, inputs, logits, [e.item >= n_new for e in batch])
                    if kd is not None:
                        distills.append(float(kd.detach()))
                        loss = loss + cfg.distill * kd
                if ewc is not None:
                    pen = ewc.penalty()
                    penalties.append(float(pen.detach()))
                    loss = loss + pen
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
            dt = time.perf_counter() - t0
            seconds += dt
            samples += len(examples)
            rec = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "examples": len(examples),
                   "replay": len(take), "seconds": round(dt, 2)}
            if penalties:
                rec["ewc_penalty"] = round(float(np.mean(penalties)), 5)
            if distills:
                rec["distill_kl"] = round(float(np.mean(distills)), 5)
            records.append(rec)
            log.info("adapter epoch %d: loss %.4f (%d examples, %d replayed)", epoch + 1, rec["loss"],
                     len(examples), len(take))
        bar.close()
        model.eval()
        return records, seconds, samples
