"""Training samples of the generative retriever v2 and their batches.

A sample is (source, text row in that source's state cache, target item row). Sources are
the item texts (doc→id), title spans (pseudo-queries: a random run of title words, the
chapter's cheapest query generator) and real training queries (query→id). Batches never
mix sources, so each gathers states from one cache; their order is shuffled per epoch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Words per title span (inclusive bounds).
SPAN_WORDS = (2, 6)


def title_spans(text: str, count: int, rng: random.Random) -> list[str]:
    """``count`` random contiguous word runs of ``text`` (the whole text when it is short)."""
    words = text.split()
    out = []
    for _ in range(count):
        if len(words) <= SPAN_WORDS[0]:
            out.append(text)
            continue
        n = rng.randint(SPAN_WORDS[0], min(SPAN_WORDS[1], len(words) - 1))
        start = rng.randint(0, len(words) - n)
        out.append(" ".join(words[start : start + n]))
    return out


@dataclass
class Samples:
    """Parallel arrays of one source: text rows in its cache and target item rows."""

    source: str
    rows: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.rows)

    def subsample(self, n: int, rng: np.random.Generator) -> Samples:
        """At most ``n`` samples drawn without replacement."""
        if n >= len(self):
            return self
        pick = rng.choice(len(self), size=n, replace=False)
        return Samples(self.source, self.rows[pick], self.items[pick])


def make_samples(source: str, texts: Sequence[str], items: Sequence[int], cache_index: dict[str, int]) -> Samples:
    """Samples of ``source`` for (text, item row) pairs whose text is in the cache."""
    keep = [(cache_index[t], i) for t, i in zip(texts, items, strict=True) if t in cache_index]
    arr = np.array(keep, np.int64).reshape(-1, 2)
    return Samples(source, arr[:, 0], arr[:, 1])


def batches(parts: Sequence[Samples], batch_size: int, rng: np.random.Generator,
            shard: Callable[[list[tuple[int, npt.NDArray[np.int64]]]], list[tuple[int, npt.NDArray[np.int64]]]]
            | None = None) -> Iterator[tuple[Samples, int]]:
    """Shuffled single-source batches over all ``parts``; yields (batch, samples so far).
    ``shard``: this process's share of the shuffled plan (see :class:`tandem.training.loop.Parallel`)."""
    plan: list[tuple[int, npt.NDArray[np.int64]]] = []
    for k, part in enumerate(parts):
        order = rng.permutation(len(part))
        plan.extend((k, order[s : s + batch_size]) for s in range(0, len(order), batch_size))
    rng.shuffle(plan)
    if shard is not None:
        plan = shard(plan)
    done = 0
    for k, idx in plan:
        part = parts[k]
        done += len(idx)
        yield Samples(part.source, part.rows[idx], part.items[idx]), done
