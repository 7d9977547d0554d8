"""Stage 1 on a pretrained start: adapt the encoder to the catalog (LoRA through ``peft``).

Section 5.1.2 starts stage 1 from an existing pretrained model and continues its training on
the domain. Here that is a symmetric contrastive fine-tune of the encoder on the training
pairs: a batch of queries and one relevant title each, both encoded live through LoRA, and
an in-batch softmax in both directions (query → title, title → query) over the batch's
pooled unit vectors. Both sides move, unlike the later encoder stage, which adapts only the
query side against item vectors fixed at the unadapted titles.

Why it comes first: measured on the full Home Depot catalog (dev, 1,234 queries), the
unadapted all-MiniLM-L6-v2 as a flat dense retriever scores nDCG@10 0.275 / R@100 0.620, and
the v2 decoder trained on top of it saturated at 0.300 / 0.640 (more epochs and wider
beams did not move it: its item vectors stay at the unadapted titles). Ten minutes of this
stage alone (rank 8 on query/value, batch 64, ~3.7 passes over the training queries) lifted
the flat dense figures to 0.334 / 0.696. The decoder's node and item tables start from the
adapted vectors, so its start is that much better. The IDs stay those of the *unadapted*
encoder (the pipeline's ID step and new-item assignment use it), so adapting never
invalidates an ID map; only the vectors the decoder scores with change.

The LoRA weights are merged at the end, so the encoder stays a plain BERT, and the adapted
weights get their own fingerprint, so state caches never mix the two encoders.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from tandem.encoder import TextEncoder
    from tandem.training.loop import Parallel
    from tandem.training.tree_config import TreeTrainConfig


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def adaptation_plan(pairs: Sequence[tuple[str, str]], titles: Mapping[str, str], batch_size: int,
                    rng: random.Random) -> list[list[tuple[str, str]]]:
    """One pass: every training query once, with one of its relevant titles drawn at random,
    in shuffled batches. A batch never holds the same title twice (it would be a false
    negative of its twin): a pair goes to the first unfilled batch without its title. Batches
    of fewer than two pairs (nothing to contrast) are dropped."""
    by_query: dict[str, list[str]] = {}
    for q, item in pairs:
        if item in titles:
            by_query.setdefault(q, []).append(titles[item])
    queries = sorted(by_query)
    rng.shuffle(queries)
    done: list[list[tuple[str, str]]] = []
    open_: list[tuple[list[tuple[str, str]], set[str]]] = []
    for q in queries:
        title = rng.choice(by_query[q])
        slot = next((b for b in open_ if title not in b[1]), None)
        if slot is None:
            slot = ([], set())
            open_.append(slot)
        slot[0].append((q, title))
        slot[1].add(title)
        if len(slot[0]) == batch_size:
            done.append(slot[0])
            open_.remove(slot)
    return done + [b for b, _ in open_ if len(b) >= 2]


def contrastive_loss(q: torch.Tensor, d: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric in-batch softmax over unit vectors ``q``, ``d`` ``[B, dim]`` (row i goes with row i)."""
    sim = scale * (q @ d.T)
    labels = torch.arange(len(q), device=q.device)
    return (F.cross_entropy(sim.float(), labels) + F.cross_entropy(sim.T.float(), labels)) / 2


#: Share of the run's ``total_minutes`` by which stage 1 must have ended, so that encoding for
#: the decoder, its stages and the final check keep the rest.
RUN_SHARE = 0.5


def adapt_encoder(encoder: TextEncoder, pairs: Sequence[tuple[str, str]], titles: Mapping[str, str],
                  config: TreeTrainConfig, *, parallel: Parallel | None = None, run_start: float | None = None,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Adapt ``encoder`` in place on ``pairs`` (query text, item id) with ``titles`` (item id →
    text) for ``config.adapt_epochs`` passes or ``config.adapt_minutes``, whichever ends first
    (and, with ``config.total_minutes``, by :data:`RUN_SHARE` of it after ``run_start``, a
    ``time.perf_counter`` value); merge the LoRA weights and set the encoder's fingerprint to its
    new weights. Returns the stage's figures (steps, seconds, passes, final loss, why it
    stopped); with no step taken the encoder is left untouched (``steps`` 0)."""
    from tandem.training.loop import Parallel
    from tandem.training.tree_lora import merge_encoder, wrap_encoder

    par = parallel or Parallel()
    t0 = time.perf_counter()
    ends = [t0 + 60 * config.adapt_minutes] if config.adapt_minutes else []
    if config.total_minutes and run_start is not None:
        ends.append(run_start + 60 * config.total_minutes * RUN_SHARE)
    deadline = min(ends) if ends else None
    rng = random.Random(config.seed)
    first = adaptation_plan(pairs, titles, config.adapt_batch_size, rng)
    if not first or par.any(deadline is not None and time.perf_counter() > deadline):
        why = "no batch of two distinct titles" if not first else "time budget reached before the stage"
        echo(f"[adapt] skipped: {why}")
        return {"passes": 0, "steps": 0, "pairs": 0, "seconds": time.perf_counter() - t0, "final_loss": 0.0,
                "stop_reason": why, "lora_rank": config.lora_rank}
    params = wrap_encoder(encoder, config)
    par.sync(params)
    opt = torch.optim.AdamW(params, lr=config.adapt_lr, weight_decay=0.0)
    encoder.model.train()  # the pretrained dropout regularises both sides (LoRA itself has none)
    losses: list[float] = []
    steps = passes = seen = 0
    reason = "epochs done"
    for n in range(config.adapt_epochs):
        plan = first if n == 0 else adaptation_plan(pairs, titles, config.adapt_batch_size, rng)
        # Not sharded: the in-batch negatives are the whole batch, so every rank of a distributed
        # run takes each whole batch (same seed, data and start: the same steps as one process,
        # nothing to reduce). Sharding it would need a differentiable all-gather of the vectors.
        for batch in plan:
            qi, qm = encoder.tokenize([q for q, _ in batch])
            di, dm = encoder.tokenize([t for _, t in batch])
            qv, dv = encoder.pool(encoder.states(qi, qm), qm), encoder.pool(encoder.states(di, dm), dm)
            loss = contrastive_loss(qv, dv, config.adapt_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            steps += 1
            seen += len(batch)
            if par.any(deadline is not None and time.perf_counter() > deadline):
                reason = f"time budget ({config.adapt_minutes} min) reached in pass {passes + 1}"
                break
        else:
            passes += 1
            continue
        break
    merge_encoder(encoder)
    encoder.fingerprint = weights_fingerprint(encoder.model)
    seconds = time.perf_counter() - t0
    tail = losses[-50:]
    stats = {"passes": passes, "steps": steps, "pairs": seen, "seconds": seconds,
             "final_loss": sum(tail) / len(tail) if tail else 0.0, "stop_reason": reason,
             "lora_rank": config.lora_rank}
    echo(f"[adapt] encoder adapted on {seen} query-title pairs ({steps} steps, {passes} full passes) in "
         f"{seconds:.0f} s, loss {stats['final_loss']:.4f}; {reason}")
    return stats
