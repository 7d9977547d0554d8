"""Array-based prefix trie over fixed-length token-id sequences.

The trie is what constrained decoding walks: a state is a node, a transition is "append
one token". It is stored per depth as padded transition tables (ELL format): for the
``n_d`` nodes at depth ``d``, ``tokens[d]`` and ``next[d]`` are ``[n_d, K_d]`` arrays
holding each node's child tokens and child node indices (local to depth ``d + 1``),
``-1`` where a node has fewer than ``K_d`` children. A batch of states then expands to its
candidates with one fancy-index per depth — no per-node Python — and the same arrays move
to the model's device as tensors (:meth:`PrefixTrie.device_view`).

Why padded tables rather than pure CSR: a constant row width makes "all children of all
beams" a dense ``[beams, K]`` gather, and it leaves free slots, so :meth:`PrefixTrie.insert`
adds an ID in amortised O(length) without a rebuild (rows and tables grow by doubling).
``K_d`` is the largest fan-out at depth ``d``; for hierarchical semantic IDs that is the
branching factor or the leaf capacity, so the padding costs little.

Every sequence has the same length, so every leaf sits at depth ``length`` and decoding
always takes exactly ``length`` steps. Leaf values are the row index of the sequence in
the array the trie was built from, then consecutive integers for inserted sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tandem.errors import InvalidInput

if TYPE_CHECKING:  # torch is imported lazily: the ID builder and CLI do not need it.
    import torch

_PAD = -1


def _as_sequences(seqs: npt.ArrayLike, what: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(seqs)
    if arr.ndim != 2:
        raise InvalidInput(f"`{what}` must be a 2-D array [n_ids, length], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InvalidInput(f"`{what}` must have length >= 1")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"`{what}` must hold integer token ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise InvalidInput(f"`{what}` token ids must be >= 0")
    return arr


@dataclass(frozen=True)
class DeviceTrie:
    """The trie's transition tables as tensors on one device, for vectorised decoding.

    Per depth ``d``: ``vocab[d]`` is the sorted set of tokens that occur at position ``d``
    (the only tokens the decoder has to score there); ``cand_local[d]`` ``[n_d, K_d]`` gives
    each child as an index into ``vocab[d]`` (0 where padded); ``cand_next[d]`` gives the
    child's node index at depth ``d + 1`` (``-1`` where padded). ``leaf_value`` maps a node
    at the last depth to its leaf value.
    """

    vocab: tuple[torch.Tensor, ...]
    cand_local: tuple[torch.Tensor, ...]
    cand_next: tuple[torch.Tensor, ...]
    leaf_value: torch.Tensor
    version: int


class PrefixTrie:
    """A prefix trie over token-id sequences of one fixed length; see the module docstring."""

    def __init__(self, length: int) -> None:
        """An empty trie for sequences of ``length`` tokens."""
        if length < 1:
            raise InvalidInput(f"`length` must be >= 1, got {length}")
        self._length = length
        # Depth d in [0, length): node count, fan-out, and the padded child tables.
        self._n = [1] + [0] * length  # depth 0 holds the root; index `length` counts leaves
        self._deg: list[npt.NDArray[np.int64]] = [np.zeros(1, np.int64) for _ in range(length)]
        self._tok: list[npt.NDArray[np.int64]] = [np.full((1, 1), _PAD, np.int64) for _ in range(length)]
        self._nxt: list[npt.NDArray[np.int64]] = [np.full((1, 1), _PAD, np.int64) for _ in range(length)]
        self._leaf_value = np.zeros(0, np.int64)
        self._seqs = np.zeros((0, length), np.int64)  # by leaf value
        self._n_leaves = 0
        self._version = 0
        self._device_cache: dict[Any, DeviceTrie] = {}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_sequences(cls, seqs: npt.ArrayLike) -> PrefixTrie:
        """Build from an int array ``[n_ids, length]``; row ``i`` gets leaf value ``i``.

        Fully vectorised (one lexsort, then per-depth cumsums), so 100k+ IDs build in well
        under a second. Duplicate rows are refused: an ID must name one item.
        """
        arr = _as_sequences(seqs, "seqs")
        n, length = arr.shape
        trie = cls(length)
        if n == 0:
            return trie
        order = np.lexsort(arr.T[::-1])
        srt = arr[order]
        # new[i, d]: row i starts a new prefix of length d + 1 in sorted order.
        new = np.ones((n, length), dtype=bool)
        if n > 1:
            new[1:] = np.logical_or.accumulate(srt[1:] != srt[:-1], axis=1)
        if not new[:, -1].all():
            dup = srt[np.flatnonzero(~new[:, -1])[0]]
            raise InvalidInput(f"`seqs` contains a duplicate sequence {dup.tolist()}")
        parent = np.zeros(n, np.int64)  # node index at depth d of each sorted row
        for d in range(length):
            node = np.cumsum(new[:, d]) - 1  # node index at depth d + 1
            rows = np.flatnonzero(new[:, d])
            par, tok, child = parent[rows], srt[rows, d], node[rows]
            n_par = trie._n[d]
            deg = np.bincount(par, minlength=n_par).astype(np.int64)
            width = max(int(deg.max()), 1)
            start = np.cumsum(deg) - deg
            slot = np.arange(len(rows)) - start[par]
            tok_tab = np.full((n_par, width), _PAD, np.int64)
            nxt_tab = np.full((n_par, width), _PAD, np.int64)
            tok_tab[par, slot] = tok
            nxt_tab[par, slot] = child
            trie._deg[d], trie._tok[d], trie._nxt[d] = deg, tok_tab, nxt_tab
            trie._n[d + 1] = int(node[-1]) + 1
            parent = node
        trie._leaf_value = np.empty(n, np.int64)
        trie._leaf_value[parent] = order
        trie._seqs = arr.copy()
        trie._n_leaves = n
        return trie

    def insert(self, seq: npt.ArrayLike) -> int:
        """Add one sequence without rebuilding; returns its leaf value.

        Inserting a sequence that is already present changes nothing and returns its
        existing leaf value, so replaying an event is harmless.
        """
        s = _as_sequences(np.asarray(seq).reshape(1, -1), "seq")[0]
        if len(s) != self._length:
            raise InvalidInput(f"`seq` must have {self._length} tokens, got {len(s)}")
        existing = self.leaf(s)
        if existing is not None:
            return existing
        node = 0
        for d in range(self._length):
            row = self._tok[d][node, : self._deg[d][node]]
            hit = np.flatnonzero(row == s[d])
            if hit.size:
                node = int(self._nxt[d][node, hit[0]])
                continue
            child = self._new_node(d + 1)
            self._add_edge(d, node, int(s[d]), child)
            node = child
        value = self._n_leaves
        self._leaf_value = _grow_1d(self._leaf_value, node + 1)
        self._leaf_value[node] = value
        self._seqs = _grow_rows(self._seqs, value + 1)
        self._seqs[value] = s
        self._n_leaves += 1
        self._version += 1
        return value

    def _new_node(self, depth: int) -> int:
        """Append a node at ``depth``, growing that depth's tables by doubling when full."""
        idx = self._n[depth]
        self._n[depth] += 1
        if depth < self._length:
            if idx >= self._tok[depth].shape[0]:
                rows = max(2 * self._tok[depth].shape[0], idx + 1)
                self._tok[depth] = _grow_rows(self._tok[depth], rows, fill=_PAD)
                self._nxt[depth] = _grow_rows(self._nxt[depth], rows, fill=_PAD)
                self._deg[depth] = _grow_1d(self._deg[depth], rows)
        return idx

    def _add_edge(self, depth: int, node: int, token: int, child: int) -> None:
        k = int(self._deg[depth][node])
        if k >= self._tok[depth].shape[1]:
            cols = 2 * self._tok[depth].shape[1]
            self._tok[depth] = _grow_cols(self._tok[depth], cols)
            self._nxt[depth] = _grow_cols(self._nxt[depth], cols)
        self._tok[depth][node, k] = token
        self._nxt[depth][node, k] = child
        self._deg[depth][node] = k + 1

    # -- queries --------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """Tokens per sequence (= decoding steps)."""
        return self._length

    @property
    def version(self) -> int:
        """Bumped by every insert that changed the trie; device views are cached per version."""
        return self._version

    def __len__(self) -> int:
        return self._n_leaves

    def num_nodes(self, depth: int) -> int:
        """Number of nodes at ``depth`` (0 = the root, ``length`` = the leaves)."""
        return self._n[depth]

    def leaf(self, seq: npt.ArrayLike) -> int | None:
        """The leaf value of ``seq``, or ``None`` when it is not a complete sequence here."""
        s = np.asarray(seq, dtype=np.int64).reshape(-1)
        if len(s) != self._length or self._n_leaves == 0:
            return None
        node = 0
        for d in range(self._length):
            row = self._tok[d][node, : self._deg[d][node]]
            hit = np.flatnonzero(row == s[d])
            if not hit.size:
                return None
            node = int(self._nxt[d][node, hit[0]])
        return int(self._leaf_value[node])

    def contains(self, seq: npt.ArrayLike) -> bool:
        """Whether ``seq`` is one of the trie's sequences."""
        return self.leaf(seq) is not None

    def __contains__(self, seq: object) -> bool:
        return self.contains(seq)  # type: ignore[arg-type]

    def sequences(self) -> npt.NDArray[np.int64]:
        """All sequences, row ``i`` = leaf value ``i``."""
        return self._seqs[: self._n_leaves].copy()

    def children(self, depth: int, nodes: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Batch transition lookup: ``(tokens, next_nodes)``, each ``[len(nodes), K_depth]``.

        ``nodes`` are node indices at ``depth``; padded slots hold ``-1`` in both arrays.
        """
        idx = np.asarray(nodes, dtype=np.int64)
        n = self._n[depth]
        return self._tok[depth][:n][idx], self._nxt[depth][:n][idx]

    def level_vocab(self, depth: int) -> npt.NDArray[np.int64]:
        """Sorted distinct tokens that occur at position ``depth`` of some sequence."""
        tab = self._tok[depth][: self._n[depth]]
        return np.unique(tab[tab >= 0])

    def device_view(self, device: torch.device | str | None = None) -> DeviceTrie:
        """The transition tables as tensors on ``device`` (cached until the next insert)."""
        import torch

        dev = torch.device(device if device is not None else "cpu")
        cached = self._device_cache.get(dev)
        if cached is not None and cached.version == self._version:
            return cached
        vocab, local, nxt = [], [], []
        for d in range(self._length):
            n = self._n[d]
            tok = self._tok[d][:n]
            voc = self.level_vocab(d)
            loc = np.searchsorted(voc, np.where(tok >= 0, tok, voc[0] if voc.size else 0))
            loc = np.where(tok >= 0, loc, 0)
            vocab.append(torch.from_numpy(voc).to(dev))
            local.append(torch.from_numpy(loc).to(dev))
            nxt.append(torch.from_numpy(np.ascontiguousarray(self._nxt[d][:n])).to(dev))
        leaves = torch.from_numpy(self._leaf_value[: self._n[self._length]].copy()).to(dev)
        view = DeviceTrie(tuple(vocab), tuple(local), tuple(nxt), leaves, self._version)
        self._device_cache = {dev: view}
        return view


def _grow_1d(arr: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    if size <= arr.shape[0]:
        return arr
    out = np.zeros(max(size, 2 * arr.shape[0]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def _grow_rows(arr: npt.NDArray[np.int64], rows: int, fill: int = 0) -> npt.NDArray[np.int64]:
    if rows <= arr.shape[0]:
        return arr
    out = np.full((max(rows, 2 * arr.shape[0]), arr.shape[1]), fill, arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def _grow_cols(arr: npt.NDArray[np.int64], cols: int) -> npt.NDArray[np.int64]:
    out = np.full((arr.shape[0], cols), _PAD, arr.dtype)
    out[:, : arr.shape[1]] = arr
    return out
