"""Which old items a v2 adapter replays: random ones, or the new items' leaf neighbours first."""

from __future__ import annotations

import numpy as np

from tandem.catalog.item import Item
from tandem.training.tree_adapter_train import _replay_pick


class _Ids:
    """The two ID-map calls the pick needs: items in row order and their codes."""

    def __init__(self, codes: dict[str, tuple[int, ...]]) -> None:
        self.codes = codes

    def item_ids(self) -> list[str]:
        return list(self.codes)

    def as_array(self) -> np.ndarray:
        return np.array(list(self.codes.values()))


def test_neighbours_come_first_then_random_others() -> None:
    codes = {f"o{i}": (i % 3, 0, i) for i in range(9)}  # leaves (0,0), (1,0), (2,0): three old items each
    old = [Item(item_id=i, title=i) for i in codes]
    new_codes = [(1, 0, 20)]  # one new item, in leaf (1, 0)
    picked = _replay_pick(old, new_codes, _Ids(codes), 5, "neighbours", np.random.default_rng(0))
    assert len(picked) == len(set(picked)) == 5
    assert {old[i].item_id for i in picked[:3]} == {"o1", "o4", "o7"}
    rand = _replay_pick(old, new_codes, _Ids(codes), 5, "random", np.random.default_rng(0))
    assert len(set(rand)) == 5 and _replay_pick(old, new_codes, _Ids(codes), 0, "neighbours",
                                                  np.random.default_rng(0)) == []
