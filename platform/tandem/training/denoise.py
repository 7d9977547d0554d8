"""Stage-1 denoising: T5 span corruption on catalog text.

A from-scratch model first learns what product text looks like by restoring masked spans
(section 5.1.2, stage 1, "denoising auto-encoding"). Each text loses about
``noise_density`` of its tokens in spans of mean length ``mean_span``; each span becomes
one sentinel in the input, and the target lists sentinel + span tokens in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tandem.training.objectives import Example, Task


def span_corrupt(
    tokens: Sequence[int],
    sentinels: Sequence[int],
    eos_id: int,
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    item: int = -1,
) -> Example | None:
    """One span-corruption example from ``tokens`` (EOS excluded); ``None`` if too short.

    Spans are placed uniformly among the tokens, never overlapping or touching, so each
    sentinel stands for exactly one contiguous span.
    """
    n = len(tokens)
    if n < 2:
        return None
    n_noise = min(n - 1, max(1, int(round(n * noise_density))))
    n_spans = min(len(sentinels), max(1, int(round(n_noise / mean_span))), n_noise, n - n_noise)
    # Split n_noise masked tokens into n_spans non-empty spans, and the kept tokens into
    # n_spans + 1 gaps where only the first may be empty.
    noise_lengths = _partition(n_noise, n_spans, rng, allow_empty_first=False)
    keep_lengths = _partition(n - n_noise, n_spans + 1, rng, allow_empty_first=True)
    source: list[int] = []
    target: list[int] = []
    pos = 0
    for s in range(n_spans):
        source.extend(tokens[pos : pos + keep_lengths[s]])
        pos += keep_lengths[s]
        source.append(sentinels[s])
        target.append(sentinels[s])
        target.extend(tokens[pos : pos + noise_lengths[s]])
        pos += noise_lengths[s]
    source.extend(tokens[pos:])
    return Example(Task.DENOISE, (*source, eos_id), (*target, eos_id), item)


def _partition(total: int, parts: int, rng: np.random.Generator, allow_empty_first: bool) -> list[int]:
    """Random composition of ``total`` into ``parts`` positive integers (first may be 0)."""
    if allow_empty_first:
        lengths = _partition(total + 1, parts, rng, allow_empty_first=False)
        lengths[0] -= 1
        return lengths
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
    bounds = np.concatenate([[0], cuts, [total]])
    return [int(x) for x in np.diff(bounds)]
