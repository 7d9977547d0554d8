"""The ID tree as arrays, and vectorised trie-constrained beam search of the v2 decoder.

:class:`TreeIndex` turns an ID map's codes into what decoding walks: per position, every
item's node (its path through the tree) and each node's children as a padded table
(``-1`` pads), so "all children of all beams" is one gather. Positions below the last hold
cluster nodes in lexicographic prefix order; the last position's nodes are item rows. A new
item (an ID from a leaf's reserved space) is appended without a rebuild.

:func:`tree_beam_search` decodes a batch: per position it scores only the children of
each beam's node, one ``topk`` per query picks the next beams, and nothing runs in Python
per beam. When the decoder keeps one state per query and level (the default, see
:class:`~tandem.generative.tree_model.TreeDecoderConfig`), a level's scores are one matrix
product against its node table and the constraint is a gather of the children's scores —
cheaper than gathering their embeddings per beam. ``rank="last"`` ranks beams by the current position's logit (comparable across
parents because training uses a softmax over all nodes of a position); ``rank="path"``
ranks by the summed per-level log-probabilities (a softmax over each node's children),
the classic sequence score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from tandem.errors import InvalidInput
from tandem.generative.tree_model import TreeDecoder

Rank = Literal["last", "path"]


class TreeIndex:
    """Item paths and padded child tables of an ID tree; see the module docstring."""

    def __init__(self, codes: npt.ArrayLike) -> None:
        arr = np.asarray(codes, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
            raise InvalidInput(f"`codes` must be a non-empty [items, positions >= 2] array, got shape {arr.shape}")
        n, length = arr.shape
        self.length = length
        self.paths = np.zeros((n, length), np.int64)
        self._node_of: list[dict[tuple[int, ...], int]] = []
        for p in range(length - 1):
            uniq, inv = np.unique(arr[:, : p + 1], axis=0, return_inverse=True)
            self.paths[:, p] = inv.reshape(-1)
            self._node_of.append({tuple(r): i for i, r in enumerate(uniq.tolist())})
        self.paths[:, -1] = np.arange(n)
        self._children: list[list[list[int]]] = []
        for p in range(1, length):
            kids: list[list[int]] = [[] for _ in range(len(self._node_of[p - 1]))]
            pairs = np.unique(self.paths[:, p - 1 : p + 1], axis=0)
            for parent, child in pairs.tolist():
                kids[parent].append(child)
            self._children.append(kids)
        self._tables: list[torch.Tensor] | None = None

    @property
    def nodes_per_position(self) -> list[int]:
        """Node count per position (the last one: items)."""
        return [len(m) for m in self._node_of] + [len(self.paths)]

    def add(self, codes: Sequence[int]) -> int:
        """Append a new item under its existing leaf prefix; returns its item row."""
        prefix = tuple(int(c) for c in codes)
        if len(prefix) != self.length:
            raise InvalidInput(f"an ID has {self.length} codes, got {len(prefix)}")
        path = []
        for p in range(self.length - 1):
            node = self._node_of[p].get(prefix[: p + 1])
            if node is None:
                raise InvalidInput(f"ID {list(prefix)} has a prefix this tree lacks; new IDs must reuse leaf prefixes")
            path.append(node)
        row = len(self.paths)
        self.paths = np.vstack([self.paths, [*path, row]])
        self._children[-1][path[-1]].append(row)
        self._tables = None
        return row

    def member_means(self, vectors: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Per position, each node's mean item vector (its centroid); the last position: the vectors."""
        out = []
        for p, n_nodes in enumerate(self.nodes_per_position[:-1]):
            sums = np.zeros((n_nodes, vectors.shape[1]), np.float64)
            np.add.at(sums, self.paths[:, p], vectors)
            counts = np.bincount(self.paths[:, p], minlength=n_nodes)[:, None]
            out.append((sums / np.maximum(counts, 1)).astype(np.float32))
        out.append(np.asarray(vectors, np.float32))
        return out

    def tables(self) -> list[torch.Tensor]:
        """Padded child tables ``[n_{p-1}, K_p]`` for positions ``1..L-1`` (``-1`` pads)."""
        if self._tables is None:
            tabs = []
            for kids in self._children:
                width = max(1, max(map(len, kids)))
                tab = np.full((len(kids), width), -1, np.int64)
                for i, row in enumerate(kids):
                    tab[i, : len(row)] = row
                tabs.append(torch.from_numpy(tab))
            self._tables = tabs
        return self._tables


@torch.inference_mode()
def tree_beam_search(model: TreeDecoder, index: TreeIndex, q: torch.Tensor, states: torch.Tensor,
                     mask: torch.Tensor, *, beams: Sequence[int], rank: Rank = "last") -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch; returns item rows and scores ``[B, beams[-1]]`` (rows ``-1`` where fewer exist).

    ``beams[p]`` is the beam width kept after position ``p``; the last one is how many items
    come back. Rows are sorted by score, best first.
    """
    if len(beams) != index.length or min(beams) < 1:
        raise InvalidInput(f"`beams` needs {index.length} widths >= 1, got {list(beams)}")
    tables = [t.to(q.device) for t in index.tables()]
    kv, bias = model.memory(states, mask)
    h = model.step(0, None, q, kv, bias)  # [B, 1, dim]
    logits = model.logits(0, h[:, 0])  # [B, n0]
    score = logits if rank == "last" else logits.log_softmax(-1)
    width = min(beams[0], score.shape[1])
    score, nodes = score.topk(width, dim=-1)
    neg = torch.finfo(score.dtype).min
    shared_state = not model.decoder_config.condition_on_prefix
    for p in range(1, index.length):
        cand = tables[p - 1][nodes.clamp(min=0)]  # [B, M, K]
        valid = (cand >= 0) & (nodes >= 0)[..., None]
        if shared_state:  # one state per query: score the whole level once, gather the candidates' scores
            level = model.logits(p, model.step(p, None, q, kv, bias)[:, 0])  # [B, n_p]
            lg = level.gather(1, cand.clamp(min=0).flatten(1)).view(cand.shape).masked_fill(~valid, neg)
        else:
            h = model.step(p, nodes.clamp(min=0), q, kv, bias)  # [B, M, dim]
            lg = model.logits(p, h, cand).masked_fill(~valid, neg)
        if rank == "last":
            step = lg
        else:
            step = score[..., None] + lg.log_softmax(-1).masked_fill(~valid, neg)
        flat, flat_nodes = step.flatten(1), cand.flatten(1)
        width = min(beams[p], flat.shape[1])
        score, pick = flat.topk(width, dim=-1)
        nodes = flat_nodes.gather(1, pick).masked_fill(score <= neg / 2, -1)
    return nodes, score


@torch.inference_mode()
def forced_log_probs(model: TreeDecoder, index: TreeIndex, q: torch.Tensor, states: torch.Tensor,
                     mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Log-probability of each given item's whole ID for one query: ``[M]`` for item ``rows`` ``[M]``.

    Forced decoding of the items' paths, scored the way the model was trained: per position,
    the gold node's log-softmax over *all* nodes of that position (with a shared state per
    level, the default); for a parent-conditioned decoder, over the parent's children (the
    trie-constrained step). The sum is the model's own relevance judgement of an item that
    any source proposed, not only of its own hits. ``q`` ``[1, dim]``, ``states`` ``[1, T, dim]``.
    """
    if q.shape[0] != 1:
        raise InvalidInput(f"`forced_log_probs` scores one query at a time, got {q.shape[0]}")
    paths = torch.from_numpy(index.paths).to(q.device)[rows]  # [M, L]
    kv, bias = model.memory(states, mask)
    total = torch.zeros(len(rows), dtype=torch.float32, device=q.device)
    tables = [t.to(q.device) for t in index.tables()]
    for p in range(index.length):
        if p == 0 or not model.decoder_config.condition_on_prefix:
            level = model.logits(p, model.step(p, None, q, kv, bias)[:, 0])[0].float()  # [n_p]
            total += level[paths[:, p]] - level.logsumexp(-1)
        else:
            parents = paths[None, :, p - 1]  # [1, M]
            cand = tables[p - 1][parents]  # [1, M, K]
            lg = model.logits(p, model.step(p, parents, q, kv, bias), cand).float().masked_fill(cand < 0, -1e9)
            gold = (cand == paths[None, :, p, None]).float().argmax(-1)  # [1, M]
            total += (lg.gather(-1, gold[..., None]).squeeze(-1) - lg.logsumexp(-1))[0]
    return total
