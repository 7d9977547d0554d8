"""The batch sharding and cache merging of :mod:`tandem.training.distributed` (no process group needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.errors import InvalidInput
from tandem.training.distributed import TorchDistributed, concat_caches, torchrun_world
from tandem.training.state_cache import StateCache


def _plan() -> list[tuple[int, np.ndarray]]:
    return [(0, np.arange(5)), (1, np.arange(10, 14)), (0, np.array([7]))]


def test_every_rank_takes_its_slice_of_every_batch() -> None:
    plans = [TorchDistributed(rank=r, world=2).shard(_plan()) for r in range(2)]
    assert [len(p) for p in plans] == [3, 3]  # equal step counts: the collectives match
    for b, (k, _) in enumerate(_plan()):
        assert [p[b][0] for p in plans] == [k, k]
    # the slices of a batch partition it (the 1-sample batch: rank 1 has it, rank 0 a weight-0 stand-in)
    assert plans[0][0][1].tolist() + plans[1][0][1].tolist() == list(range(5))
    assert plans[0][2][1].tolist() == [7] and plans[1][2][1].tolist() == [7]
    ranks = [TorchDistributed(rank=r, world=2) for r in range(2)]
    for d in ranks:
        d.shard(_plan())
    assert [n for _, n in ranks[1]._weights] == [5, 4, 1]  # whole-batch sizes, for the sample counts
    weights = [[w for w, _ in d._weights] for d in ranks]
    assert weights == [[2 / 5, 2 / 4, 0.0], [3 / 5, 2 / 4, 1.0]]
    assert all(sum(ws) == pytest.approx(1.0) for ws in zip(*weights, strict=True))


def test_concat_caches_keeps_order_and_offsets() -> None:
    def cache(texts: list[str], lengths: list[int]) -> StateCache:
        flat = np.arange(sum(lengths) * 2, dtype=np.float16).reshape(-1, 2)
        return StateCache(texts, np.ones((len(texts), 2), np.float32), flat,
                          np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    empty = StateCache([], np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float16), np.zeros(1, np.int64))
    a, b = cache(["x", "y"], [2, 3]), cache(["z"], [1])
    merged = concat_caches([a, empty, b])
    assert merged.texts == ["x", "y", "z"] and merged.offsets.tolist() == [0, 2, 5, 6]
    assert np.array_equal(merged.batch(np.array([2]))[1][0].numpy(), b.batch(np.array([0]))[1][0].numpy())


def test_world_size_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InvalidInput, match="WORLD_SIZE"):
        torchrun_world()
    monkeypatch.delenv("WORLD_SIZE")
    assert torchrun_world() == 1


def test_state_cache_save_is_atomic_and_round_trips(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    flat = np.arange(12, dtype=np.float16).reshape(6, 2)
    cache = StateCache(["a", "bb"], np.ones((2, 2), np.float32), flat, np.array([0, 2, 6]))
    path = tmp_path / "c.npz"
    cache.save(path)
    back = StateCache.load(path)
    assert back.texts == ["a", "bb"] and np.array_equal(back.flat, flat)

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.save(path)
    assert StateCache.load(path).texts == ["a", "bb"]  # the old file is whole, no temp file is left
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
