"""Multi-process training of the generative retriever v2 with ``torch.distributed`` (DDP-style).

:class:`TorchDistributed` plugs into the trainer's one seam for parallelism,
:class:`~tandem.training.loop.Parallel`. It is initialised from the environment ``torchrun``
(and the Kubeflow Training Operator's ``PyTorchJob``) sets: ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; the backend is gloo on CPU, NCCL on CUDA.

Why a run on N ranks equals a run in one process. Every rank shuffles the *same* seeded
batch plan; :meth:`TorchDistributed.shard` gives each rank its contiguous slice of *every*
batch (so every rank takes as many steps as one process would, and the all-reduce calls of
the ranks match one for one). The loss of a batch is a mean over its samples, so the
gradient of the whole batch is the sum over ranks of each rank's gradient weighted by its
share of the batch (``n_rank / n_batch``); :meth:`TorchDistributed.all_reduce` computes
exactly that. In exact arithmetic the updates, and so the losses, are those of one
process; in floating point they differ by summation order (and by bf16 rounding where the
CPU computes in bf16). A rank whose slice of a short batch is empty computes one sample
with weight 0, so the collective calls still match.

The encoder-state cache is encoded by shards: each rank encodes a contiguous slice of the
texts and the slices are all-gathered in rank order (:func:`sharded_states`), so every rank
holds the whole cache (batches index any text); rank 0 alone writes it to disk, as it alone
writes the model folder and the summary while the other ranks wait at a barrier.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist

from tandem.errors import InvalidInput
from tandem.training.loop import Parallel
from tandem.training.state_cache import StateCache

Batch = tuple[int, npt.NDArray[np.int64]]
T = TypeVar("T")

#: How long a rank waits for the others at a collective before the run fails.
TIMEOUT = timedelta(minutes=30)


def torchrun_world() -> int:
    """``WORLD_SIZE`` of the environment (1 when not launched by torchrun or a PyTorchJob)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(raw)
    except ValueError:
        raise InvalidInput(f"`WORLD_SIZE` must be an integer, got {raw!r}") from None
    if world < 1:
        raise InvalidInput(f"`WORLD_SIZE` must be at least 1, got {world}")
    return world


@dataclass
class TorchDistributed(Parallel):
    """Gradient averaging over ``torch.distributed`` ranks; see the module docstring."""

    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _weights: deque[tuple[float, int]] = field(default_factory=deque, repr=False)
    _weight: float = field(default=1.0, repr=False)
    _batch: int = field(default=0, repr=False)

    @classmethod
    def from_env(cls, device: str = "cpu") -> TorchDistributed:
        """Join the process group torchrun describes (gloo for ``cpu``, NCCL for ``cuda``)."""
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise InvalidInput(f"distributed training needs torchrun's environment; missing {', '.join(missing)}")
        rank, world = int(os.environ["RANK"]), torchrun_world()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not 0 <= rank < world:
            raise InvalidInput(f"`RANK` must be in [0, {world}), got {rank}")
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, timeout=TIMEOUT)
        return cls(rank=rank, world=world, local_rank=local,
                   device=torch.device(f"cuda:{local}") if cuda else torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files and prints (rank 0)."""
        return self.rank == 0

    def close(self, *, wait: bool = True) -> None:
        """Leave the process group; ``wait``: after a last barrier, so no rank exits while others
        still write (not after a failure, where the other ranks may never get there)."""
        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        dist.barrier()

    # -- the Parallel seam ---------------------------------------------------------------

    def shard(self, plan: list[T]) -> list[T]:
        """This rank's contiguous slice of every batch of the plan (see the module docstring)."""
        out: list[Any] = []
        self._weights.clear()
        for item in plan:
            k, idx = cast("tuple[Any, Any]", item)  # plan items are (key, index array) pairs
            lo, hi = len(idx) * self.rank // self.world, len(idx) * (self.rank + 1) // self.world
            if hi > lo:
                out.append((k, idx[lo:hi]))
                self._weights.append(((hi - lo) / len(idx), len(idx)))
            else:  # nothing of this batch for this rank: one sample, weight 0, to keep the calls matched
                out.append((k, idx[:1]))
                self._weights.append((0.0, len(idx)))
        return out

    def all_reduce(self, params: Iterable[Any]) -> None:
        """Replace each gradient by the whole batch's: the share-weighted sum over ranks."""
        self._weight, self._batch = self._weights.popleft() if self._weights else (1.0 / self.world, 0)
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self._weight)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def reduce_loss(self, loss: float) -> float:
        """The whole batch's loss: the share-weighted sum of the ranks' losses of the last step."""
        t = torch.tensor([loss * self._weight], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def step_samples(self, local: int) -> int:
        """Samples of the whole batch of the last step (all ranks together)."""
        return self._batch or local * self.world

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (so a stop rule stops every rank at the same step)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sync(self, params: Iterable[torch.Tensor]) -> None:
        """Copy rank 0's values of ``params`` to every rank (freshly initialised weights)."""
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def check_same(self, what: str, data: bytes) -> None:
        """Fail clearly when ``data`` differs between ranks (e.g. semantic IDs built on every rank)."""
        digest = hashlib.sha256(data).hexdigest()
        got: list[Any] = [None] * self.world
        dist.all_gather_object(got, digest)
        if len(set(got)) > 1:
            raise InvalidInput(f"{what} differ between ranks ({len(set(got))} versions): they must be "
                               "built deterministically or passed in")

    def gather_objects(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order."""
        got: list[Any] = [None] * self.world
        dist.all_gather_object(got, obj)
        return got

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def concat_caches(parts: Sequence[StateCache]) -> StateCache:
    """One cache of ``parts`` in order (the texts of the parts must be disjoint)."""
    texts = [t for p in parts for t in p.texts]
    dim = parts[0].pooled.shape[1]
    pooled = np.concatenate([p.pooled.reshape(-1, dim) for p in parts]).astype(np.float32)
    flat = np.concatenate([p.flat.reshape(-1, dim) for p in parts]).astype(np.float16)
    lengths = np.concatenate([np.diff(p.offsets) for p in parts]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return StateCache(texts, pooled, flat, offsets)


def sharded_states(parallel: TorchDistributed, build: Callable[[list[str]], StateCache], texts: Sequence[str],
                   dim: int) -> StateCache:
    """States of ``texts`` (duplicates once; ``dim``: the encoder's width): each rank builds its
    contiguous slice of the unique texts, and every rank gets all of them."""
    texts = list(dict.fromkeys(texts))
    n = len(texts)
    lo, hi = n * parallel.rank // parallel.world, n * (parallel.rank + 1) // parallel.world
    mine = build(texts[lo:hi]) if hi > lo else StateCache(
        [], np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float16), np.zeros(1, np.int64))
    merged = concat_caches(parallel.gather_objects(mine))
    if merged.texts != texts:
        raise InvalidInput("sharded encoder states came back out of order (ranks disagree on the texts)")
    return merged


def silent(_: str) -> None:
    """The echo of ranks other than 0 (one rank prints the run)."""


def torchrun_parallel(device: str = "cpu") -> TorchDistributed | None:
    """The distributed seam when launched by torchrun with ``WORLD_SIZE`` > 1, else ``None`` (one process)."""
    return TorchDistributed.from_env(device) if torchrun_world() > 1 else None
