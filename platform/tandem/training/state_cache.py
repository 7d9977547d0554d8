"""Encoder states computed once and reused every epoch (generative v2, stages 2–3).

With the encoder frozen, an epoch over titles, pseudo-queries and training queries would
re-encode the same texts every time; on 2 CPU cores that is most of the cost. A
:class:`StateCache` holds each text's token states (fp16, padding dropped, stored as one
flat array plus offsets) and its pooled unit vector (fp32), so an epoch costs only the
decoder. Saved as one ``.npz`` so a resumed run does not encode again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tandem.errors import CorruptArtifact


class StateCache:
    """Token states and pooled vectors of a list of texts; see the module docstring."""

    def __init__(self, texts: list[str], pooled: npt.NDArray[np.float32], flat: npt.NDArray[np.float16],
                 offsets: npt.NDArray[np.int64]) -> None:
        if not (len(texts) == len(pooled) == len(offsets) - 1):
            raise CorruptArtifact("state cache: texts, vectors and offsets disagree in length")
        self.texts, self.pooled, self.flat, self.offsets = texts, pooled, flat, offsets

    @classmethod
    def build(cls, encoder: Any, texts: Sequence[str], *, batch_size: int = 256,
              progress: Callable[[int], None] | None = None) -> StateCache:
        """Encode ``texts`` with a :class:`~tandem.encoder.TextEncoder` (duplicates once)."""
        uniq = list(dict.fromkeys(texts))
        pooled, states = encoder.encode(uniq, batch_size=batch_size, keep_states=True, progress=progress)
        lengths = np.array([len(s) for s in states], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(states).astype(np.float16) if states else np.zeros((0, pooled.shape[1]), np.float16)
        return cls(uniq, pooled, flat, offsets)

    def __len__(self) -> int:
        return len(self.texts)

    def index(self) -> dict[str, int]:
        """Text → row."""
        return {t: i for i, t in enumerate(self.texts)}

    def batch(self, rows: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled ``[B, dim]``, padded states ``[B, T, dim]`` (float32) and mask ``[B, T]`` of ``rows``."""
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        width = int(lengths.max()) if len(rows) else 1
        dim = self.flat.shape[1]
        states = np.zeros((len(rows), width, dim), np.float16)
        mask = np.zeros((len(rows), width), np.int64)
        for i, (r, n) in enumerate(zip(rows.tolist(), lengths.tolist(), strict=True)):
            states[i, :n] = self.flat[self.offsets[r] : self.offsets[r] + n]
            mask[i, :n] = 1
        return (torch.from_numpy(self.pooled[rows]), torch.from_numpy(states).float(), torch.from_numpy(mask))

    def save(self, path: Path) -> None:
        """Write the cache to ``path`` (``.npz``) atomically: written beside it, then renamed, so
        a run that dies mid-write, or another process writing the same cache, never leaves a
        truncated file that a later run would read."""
        import os
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, texts=np.array(self.texts, dtype=object).astype(str), pooled=self.pooled,
                         flat=self.flat, offsets=self.offsets)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> StateCache:
        """Read a cache written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls([str(t) for t in z["texts"].tolist()], z["pooled"], z["flat"], z["offsets"])
        except (OSError, KeyError, ValueError) as exc:
            raise CorruptArtifact(f"state cache {path} is unreadable: {exc}") from None
