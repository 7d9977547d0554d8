"""Training configuration of the generative retriever, with the ``ci`` and ``full`` profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.errors import InvalidInput
from tandem.generative.model import SIZE_PRESETS, ModelSize

if TYPE_CHECKING:
    from tandem.ids import SemanticIdConfig


class StageLR(BaseModel):
    """Memorisation LR phases (section 5.1.2): warm-up (fast adaptation) → main → refinement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup: float = Field(default=2e-3, gt=0)
    """LR of the warm-up epochs (reached by a linear ramp over the first ``ramp_steps``)."""
    main: float = Field(default=1e-3, gt=0)
    """LR of the main phase."""
    refinement: float = Field(default=2e-4, gt=0)
    """LR once exact-match passes ``refine_at`` or the last epochs begin: consolidates memory."""
    warmup_epochs: int = Field(default=1, ge=0)
    """Epochs at the warm-up LR."""
    ramp_steps: int = Field(default=50, ge=0)
    """Linear LR ramp from 0 over the first steps of every stage (each stage starts a fresh
    AdamW, whose moment estimates are noisy at first)."""
    refine_at: float = Field(default=0.8, ge=0, le=1)
    """Exact-match at which the refinement phase starts."""


class TrainConfig(BaseModel):
    """Everything a training run depends on; stored in the summary so a run can be repeated.

    The learning rates are those of a small model trained from scratch; the chapter's
    1e-4 / 5e-5 / 1e-5 suit a large pretrained model and keep the same 2 : 1 : 0.2 shape.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Literal["ci", "full", "custom"] = "ci"
    """Which preset the values came from (recorded only)."""
    seed: int = 13
    """Seed of every random choice (init, shuffles, span corruption, dropout)."""
    size: ModelSize = Field(default_factory=ModelSize)
    """Model size when training from scratch."""
    vocab_size: int = Field(default=2000, ge=300)
    """Learned text pieces of the tokenizer (reserved tokens come on top)."""
    max_input_length: int = Field(default=32, ge=4)
    """Encoder length in tokens (EOS included); longer texts and queries are truncated."""
    max_query_length: int = Field(default=24, ge=4)
    """Target length of id→query examples."""
    batch_size: int = Field(default=64, ge=1)
    """Examples per optimiser step."""
    weight_decay: float = Field(default=0.01, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(default=1.0, gt=0)
    """Gradient-norm clip."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Autocast dtype; weights and the loss stay float32. ``auto`` = bf16 on CUDA and on CPUs
    with native bf16 (AMX / AVX512-BF16), fp32 elsewhere: without them oneDNN emulates bf16
    and runs about half as fast as fp32 (measured on this project's AVX-512 build machine)."""

    threads: int | None = Field(default=None, ge=1)
    """Torch CPU threads during training; ``None`` keeps torch's default (one per core). On a
    machine shared with other jobs use 1: OpenMP threads spin-wait for descheduled peers
    (measured here: 83 ms vs 1,296 ms per step of a tiny T5 with 1 vs 2 threads at load 9)."""

    time_budget_minutes: float | None = Field(default=None, gt=0)
    """Wall-clock budget of stages 1–4 (training and memorisation checks; not the tokenizer or
    the IDs). Each stage runs until its epochs or targets are done or until its deadline, a
    cumulative share of the budget (``budget_shares`` over the stages that run), so time a
    stage leaves unused passes to the next; the epoch that crosses a deadline stops at that
    batch. ``None``: no budget. The ``full`` profile sets one so that a 2-core CPU finishes
    within an hour (52 min: IDs, tokenizer and the final whole-catalog check take the rest); on
    a GPU the epoch limits end the stages long before it."""
    budget_shares: dict[str, float] = Field(
        default_factory=lambda: {"pretrain": 0.1, "memorise": 0.4, "align": 0.4, "id2q_round": 0.1})
    """Share of ``time_budget_minutes`` per stage; renormalised over the stages that run."""

    pretrain_epochs: int = Field(default=1, ge=0)
    """Stage 1: denoising epochs over the catalog text (skipped with a pretrained start)."""
    pretrain_lr: float = Field(default=2e-3, gt=0)
    """Stage 1 LR."""
    noise_density: float = Field(default=0.15, gt=0, lt=1)
    """Stage 1: share of tokens masked."""
    mean_span: float = Field(default=3.0, ge=1)
    """Stage 1: mean masked span length."""

    memorise_max_epochs: int = Field(default=40, ge=1)
    """Stage 2: upper bound on epochs; training stops earlier at ``memorise_target``."""
    exposures: int = Field(default=2, ge=1)
    """Stage 2: doc→id exposures of every item per epoch (balanced exposure)."""
    progressive_epochs: int = Field(default=3, ge=0)
    """Stage 2: epochs over which the curriculum widens from the easiest items to all."""
    progressive_start: float = Field(default=0.5, gt=0, le=1)
    """Stage 2: share of (easiest) items trained in the first epoch."""
    memorise_target: float = Field(default=0.9, gt=0, le=1)
    """Stage 2 stops once doc→id exact-match reaches this."""
    check_items: int | None = Field(default=None, ge=1)
    """Items in the memorisation check after each epoch: a fixed random sample of this many
    (``None``: all). On 52k Home Depot items the full check took as long as a stage-2 epoch
    on 2 CPU cores; a sample of 8,000 estimates exact-match within ±1.1 points (binomial 95 %
    interval at 50 %). The final
    check, after the last stage, always covers every item."""
    memorise_lr: StageLR = Field(default_factory=StageLR)
    """Stage 2 LR phases."""

    align_epochs: int = Field(default=4, ge=0)
    """Stage 3: epochs over the (query, item) pairs."""
    align_lr: float = Field(default=3e-4, gt=0)
    """Stage 3 LR: lower than stage 2, so memorisation survives alignment."""
    alpha: float = Field(default=0.5, ge=0, le=1)
    """Stage 3: weight of query→id; id→query gets ``1 − alpha``."""
    replay_weight: float = Field(default=1.0, ge=0)
    """Stage 3: weight of doc→id replay examples mixed into every epoch."""
    replay_exposures: int = Field(default=1, ge=0)
    """Stage 3: doc→id exposures per item per epoch (keeps memorisation; 0 disables)."""
    min_grade: int = Field(default=4, ge=0)
    """Lowest qrels grade that makes a training pair. Home Depot grades are
    ``round(3 × (mean rating − 1))`` on 0–6; 4 (mean rating ≥ 2.33, i.e. more raters said
    "relevant" than "partially") is where the official R@k and RR@10 start counting an item
    as relevant, so training pairs and the evaluation agree on what relevant means. Grade 3
    would add 9k "partially relevant" pairs (+23 %) that teach accessories for products."""

    # -- training strategies (issue 6; sections 5.3-5.4). Off in a bare TrainConfig; the
    # ``ci`` and ``full`` profiles turn on what bench.strategies measured better (only
    # ``pseudo_queries``: dev nDCG@10 +0.019 / +0.034 on the synthetic ci set with seeds
    # 13 / 7, +0.061 on a 505-item Home Depot sample; its typo RobustScore gain is not
    # consistent: +0.07, -0.03, +0.12).

    pseudo_queries: int = Field(default=0, ge=0)
    """Stage 3: template pseudo-queries per item added as query→id pairs (0 = off)."""
    id2q_round: bool = False
    """After stage 3, sample queries from the model's id→query direction, keep those that
    round-trip to their item, and align again on real + template + generated pairs."""
    id2q_per_item: int = Field(default=2, ge=1)
    """id→query round: queries sampled per item."""
    round_trip_k: int = Field(default=10, ge=1)
    """id→query round: a generated query is kept when its item is in the query→id top-k."""
    id2q_epochs: int = Field(default=1, ge=1)
    """id→query round: alignment epochs on the enlarged pair set."""

    rank_loss: Literal["none", "margin", "contrastive"] = "none"
    """Sequence-level ranking loss over ID log-probabilities of query→id examples:
    ``L = L_pos + λ_hard·L_hard + λ_random·L_random + λ_in_batch·L_in_batch``."""
    hard_negatives: int = Field(default=0, ge=0)
    """BM25-hard negatives per query→id example (needs a BM25 run; 0 = off)."""
    random_negatives: int = Field(default=0, ge=0)
    """Random negatives per query→id example, redrawn every epoch (0 = off)."""
    in_batch_negatives: bool = False
    """Use the other query→id examples' items in a batch as negatives."""
    lambda_hard: float = Field(default=1.0, ge=0)
    """Weight of the hard-negative ranking loss."""
    lambda_random: float = Field(default=0.5, ge=0)
    """Weight of the random-negative ranking loss."""
    lambda_in_batch: float = Field(default=0.5, ge=0)
    """Weight of the in-batch ranking loss."""
    rank_margin: float = Field(default=1.0, gt=0)
    """Margin (nats of sequence log-probability) of the ``margin`` loss."""

    curriculum: bool = False
    """Stage 3 easy→hard: exact-match (title) queries → templated → real → rewritten, one
    more level per epoch, all levels in the last epoch."""
    adaptive_alpha: float = Field(default=0.0, ge=0)
    """Stage 3 accuracy-adaptive sampling ``p ∝ exp(−α·accuracy)`` of query→id examples
    (0 = uniform)."""

    augment_share: float = Field(default=0.0, ge=0, lt=1)
    """Stage 3: share of query→id and doc→id examples replaced by an augmented copy
    (query rewrites, document perturbations); never more than this share (0 = off)."""

    align_peft: Literal["none", "lora", "ia3"] = "none"
    """Stage 3 (and the id→query round) through ``peft`` instead of full fine-tuning: every
    epoch trains a fresh adapter on the current weights (base frozen) and merges it into
    them at the epoch's end (ReLoRA-style), so checkpoints and the saved model stay plain T5
    weights and serving pays nothing. ``lora`` or ``ia3`` (prefix tuning cannot be merged)."""
    align_peft_rank: int = Field(default=16, ge=1)
    """LoRA rank of the stage-3 adapter (alpha = 2 × rank, all T5 linear layers)."""
    align_peft_lr: float = Field(default=1e-3, gt=0)
    """Stage-3 LR when ``align_peft`` is on: adapters train from zero and take larger steps."""

    fgsm_epsilon: float = Field(default=0.0, ge=0)
    """FGSM step on the encoder input embeddings in stage 3 (0 = off)."""
    fgsm_every: int = Field(default=1, ge=1)
    """FGSM on every N-th stage-3 step, to bound its cost (one extra forward-backward)."""
    fgsm_weight: float = Field(default=1.0, ge=0)
    """Weight λ of the adversarial loss: ``L_clean + λ·L(x + δ)``."""
    grad_norm_weight: float = Field(default=0.0, ge=0)
    """Stage 3 gradient-norm regularisation ``w·‖∇_x L‖²`` on input embeddings (0 = off)."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.size.d_model % self.size.num_heads:
            raise InvalidInput(f"`size.d_model` ({self.size.d_model}) must be divisible by `size.num_heads`")
        has_negatives = self.hard_negatives or self.random_negatives or self.in_batch_negatives
        if self.rank_loss != "none" and not has_negatives:
            raise InvalidInput("`rank_loss` needs negatives: set `hard_negatives`, `random_negatives` "
                               "or `in_batch_negatives`")
        unknown = set(self.budget_shares) - {"pretrain", "memorise", "align", "id2q_round"}
        if unknown or any(v < 0 for v in self.budget_shares.values()):
            raise InvalidInput(f"`budget_shares` takes non-negative shares of pretrain, memorise, align, "
                               f"id2q_round; got {self.budget_shares}")
        if has_negatives and self.rank_loss == "none":
            raise InvalidInput("negatives are set but `rank_loss` is `none`; choose `margin` or `contrastive`")
        return self


def id_config(profile: str) -> SemanticIdConfig:
    """Semantic-ID shape per profile. ``ci``: 2 levels × 8 + 16 suffixes (≤ 896 items per
    top category); ``full``: the ID builder's default 3 levels × 32 + 32 suffixes."""
    from tandem.ids import SemanticIdConfig

    if profile == "ci":
        return SemanticIdConfig(levels=2, branching=8, leaf_capacity=16, reserved_per_leaf=2)
    if profile == "full":
        return SemanticIdConfig()
    raise InvalidInput(f"`profile` must be `ci` or `full`, got {profile!r}")


#: Strategy switches both profiles share: the recipe bench.strategies measured best.
DEFAULT_RECIPE: dict[str, object] = {"pseudo_queries": 4}


def profile_config(profile: str, **overrides: object) -> TrainConfig:
    """The preset for ``ci`` or ``full``, with field overrides (``seed``, epochs...)."""
    if profile == "ci":
        base: dict[str, object] = {"profile": "ci", "size": SIZE_PRESETS["ci"], **DEFAULT_RECIPE}
    elif profile == "full":
        base = {
            "profile": "full",
            "size": SIZE_PRESETS["full"],
            "vocab_size": 8000,
            "max_input_length": 48,
            "batch_size": 256,
            "pretrain_epochs": 1,
            "memorise_max_epochs": 30,
            "exposures": 1,
            "progressive_epochs": 4,
            "memorise_lr": StageLR(warmup=2e-3, main=1e-3, refinement=2e-4, ramp_steps=200),
            "align_epochs": 6,
            "time_budget_minutes": 52.0,
            "check_items": 8000,
            **DEFAULT_RECIPE,
        }
    else:
        raise InvalidInput(f"`profile` must be `ci` or `full`, got {profile!r}")
    base.update(overrides)
    return TrainConfig.model_validate(base)
