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

Forced decoding (the model's log-probability of *any* item's ID, a fusion feature) reuses
what beam search computed for the query: per level its decoder state and the log-normaliser
of the level's full softmax (:class:`QueryLevels`), so scoring 200 items is a gather of their
distinct path nodes and one small product per level (:func:`level_log_probs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class QueryLevels:
    """What a shared-state decoder knows of a query per ID position: its decoder state ``h_p``
    (``states`` ``[B, L, dim]``) and the log-normaliser of that position's softmax over *all*
    its nodes (``log_norm`` ``[B, L]``, float32).

    Beam search computes both anyway (it scores whole levels); kept, they make the forced
    decoding of any item a gather and a dot product (:func:`level_log_probs`) instead of a
    second pass over the item table, the part of item scoring that grows with the catalog.
    """

    states: torch.Tensor
    log_norm: torch.Tensor

    def row(self, i: int) -> QueryLevels:
        """Query ``i``'s levels as a batch of one (copied, not a view of the batch)."""
        return QueryLevels(self.states[i : i + 1].clone(), self.log_norm[i : i + 1].clone())


def _level_logits(model: TreeDecoder, p: int, q: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]],
                  bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """State ``h_p`` ``[B, dim]`` of a query at position ``p`` (no parent) and its logits over the whole level."""
    h = model.step(p, None, q, kv, bias)[:, 0]
    return h, model.logits(p, h)


@torch.inference_mode()
def tree_beam_search(model: TreeDecoder, index: TreeIndex, q: torch.Tensor, states: torch.Tensor,
                     mask: torch.Tensor, *, beams: Sequence[int], rank: Rank = "last") -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch; returns item rows and scores ``[B, beams[-1]]`` (rows ``-1`` where fewer exist).

    ``beams[p]`` is the beam width kept after position ``p``; the last one is how many items
    come back. Rows are sorted by score, best first.
    """
    nodes, score, _ = tree_beam_search_levels(model, index, q, states, mask, beams=beams, rank=rank)
    return nodes, score


@torch.inference_mode()
def tree_beam_search_levels(model: TreeDecoder, index: TreeIndex, q: torch.Tensor, states: torch.Tensor,
                            mask: torch.Tensor, *, beams: Sequence[int], rank: Rank = "last"
                            ) -> tuple[torch.Tensor, torch.Tensor, QueryLevels | None]:
    """:func:`tree_beam_search` plus the queries' :class:`QueryLevels` (``None`` for a
    parent-conditioned decoder, whose states depend on the beam)."""
    if len(beams) != index.length or min(beams) < 1:
        raise InvalidInput(f"`beams` needs {index.length} widths >= 1, got {list(beams)}")
    tables = [t.to(q.device) for t in index.tables()]
    kv, bias = model.memory(states, mask)
    shared_state = not model.decoder_config.condition_on_prefix
    hs, norms = [], []
    h, logits = _level_logits(model, 0, q, kv, bias)  # [B, dim], [B, n0]
    if shared_state:
        hs.append(h)
        norms.append(logits.float().logsumexp(-1))
    score = logits if rank == "last" else logits.log_softmax(-1)
    width = min(beams[0], score.shape[1])
    score, nodes = score.topk(width, dim=-1)
    neg = torch.finfo(score.dtype).min
    for p in range(1, index.length):
        cand = tables[p - 1][nodes.clamp(min=0)]  # [B, M, K]
        valid = (cand >= 0) & (nodes >= 0)[..., None]
        if shared_state:  # one state per query: score the whole level once, gather the candidates' scores
            h, level = _level_logits(model, p, q, kv, bias)  # [B, n_p]
            hs.append(h)
            norms.append(level.float().logsumexp(-1))
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
    levels = QueryLevels(torch.stack(hs, 1), torch.stack(norms, 1)) if shared_state else None
    return nodes, score, levels


@torch.inference_mode()
def query_levels(model: TreeDecoder, q: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> QueryLevels:
    """:class:`QueryLevels` of a batch without decoding (a query that was not just retrieved)."""
    if model.decoder_config.condition_on_prefix:
        raise InvalidInput("a parent-conditioned decoder has no per-query level states")
    kv, bias = model.memory(states, mask)
    got = [_level_logits(model, p, q, kv, bias) for p in range(model.positions)]
    return QueryLevels(torch.stack([h for h, _ in got], 1), torch.stack([lg.float().logsumexp(-1) for _, lg in got], 1))


def _paths(index: TreeIndex, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The ID paths ``[M, L]`` of item ``rows`` (indexed on the host: the table stays there)."""
    return torch.from_numpy(index.paths[rows.cpu().numpy()]).to(device)


def host_rows(table: torch.Tensor, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Rows of a node table as a float32 NumPy array, without a torch kernel on the CPU.

    Item scoring touches ~200 rows: too little work to share between threads, and a torch
    gather that size runs as an OpenMP parallel region whose barrier, on a busy 2-core host,
    waits for a descheduled worker (measured: 218 ms p50 for a call that takes 0.8 ms on one
    thread). NumPy indexing runs on the calling thread. bf16 widens to float32 exactly.
    """
    if table.device.type != "cpu":
        return table[torch.from_numpy(rows).to(table.device)].float().cpu().numpy()
    data = table.detach()
    if data.dtype == torch.float32:
        return data.numpy()[rows]
    if data.dtype == torch.bfloat16:  # bf16 is the top half of a float32
        return (data.view(torch.int16).numpy()[rows].astype(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return data[torch.from_numpy(rows)].float().numpy()


def row_dots(vectors: npt.NDArray[np.float32], h: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``vectors @ h`` on the calling thread (``einsum`` without BLAS: see :func:`host_rows`)."""
    return np.einsum("ij,j->i", vectors, h)


@torch.inference_mode()
def level_log_probs(model: TreeDecoder, index: TreeIndex, levels: QueryLevels, rows: torch.Tensor | np.ndarray,
                    item_vectors: npt.NDArray[np.float32] | None = None) -> torch.Tensor:
    """Forced-decoding log-probabilities ``[M]`` (float32) of item ``rows`` from one query's ``levels``.

    Per position, each *distinct* node among the items' paths (a 3-level ID of 200 items
    shares most of its prefixes) is scored once, ``s·⟨h_p, E_p[node]⟩``, minus the level's
    log-normaliser; in float32 NumPy on the calling thread (:func:`host_rows`).
    ``item_vectors``: the rows' last-position embeddings (:func:`host_rows`) when the caller
    already gathered them (the cosine feature needs the same rows).
    """
    if levels.states.shape[0] != 1:
        raise InvalidInput(f"`levels` must hold one query, got {levels.states.shape[0]}")
    h = levels.states[0].float().cpu().numpy()  # [L, dim]
    norm = levels.log_norm[0].float().cpu().numpy()  # [L]
    paths = index.paths[np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, np.int64)]  # [M, L]
    scale = np.float32(model.scale().float())
    total = np.zeros(len(paths), np.float32)
    last = index.length - 1
    for p in range(index.length):
        if p == last:
            emb = host_rows(model.nodes[p], paths[:, p]) if item_vectors is None else item_vectors
            total += scale * row_dots(emb, h[p]) - norm[p]
        else:
            uniq, inv = np.unique(paths[:, p], return_inverse=True)
            total += (scale * row_dots(host_rows(model.nodes[p], uniq), h[p]))[inv] - norm[p]
    return torch.from_numpy(total)


@torch.inference_mode()
def forced_log_probs(model: TreeDecoder, index: TreeIndex, q: torch.Tensor, states: torch.Tensor,
                     mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Log-probability of each given item's whole ID for one query: ``[M]`` for item ``rows`` ``[M]``.

    Forced decoding of the items' paths, scored the way the model was trained: per position,
    the gold node's log-softmax over *all* nodes of that position (with a shared state per
    level, the default: :func:`query_levels` then :func:`level_log_probs`); for a
    parent-conditioned decoder, over the parent's children (the trie-constrained step), one
    decoder step per *distinct* parent. The sum is the model's own relevance judgement of an
    item that any source proposed, not only of its own hits. ``q`` ``[1, dim]``, ``states``
    ``[1, T, dim]``.
    """
    if q.shape[0] != 1:
        raise InvalidInput(f"`forced_log_probs` scores one query at a time, got {q.shape[0]}")
    if not model.decoder_config.condition_on_prefix:
        return level_log_probs(model, index, query_levels(model, q, states, mask), rows)
    paths = _paths(index, rows, q.device)  # [M, L]
    kv, bias = model.memory(states, mask)
    _, level = _level_logits(model, 0, q, kv, bias)
    total = level[0].float()[paths[:, 0]] - level[0].float().logsumexp(-1)
    tables = [t.to(q.device) for t in index.tables()]
    for p in range(1, index.length):
        parents, inv = torch.unique(paths[:, p - 1], return_inverse=True)  # [U], [M]
        cand = tables[p - 1][parents][None]  # [1, U, K]
        lg = model.logits(p, model.step(p, parents[None], q, kv, bias), cand)[0].float().masked_fill(cand[0] < 0, -1e9)
        gold = (cand[0][inv] == paths[:, p, None]).float().argmax(-1)  # [M]
        total += lg[inv, gold] - lg.logsumexp(-1)[inv]
    return total


@torch.inference_mode()
def prf_rescore(model: TreeDecoder, nodes: torch.Tensor, scores: torch.Tensor, *, docs: int,
                weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rocchio pseudo-relevance feedback on the decoded items: re-rank each query's final beam.

    The item score is ``s·⟨h, e_i⟩`` (the last position's decoder state against the item's
    embedding); feedback moves ``h`` towards the mean embedding ``c`` of the ``docs`` best items
    and re-scores the beam with ``s·⟨h + weight·c, e_i⟩ = score_i + weight·s·⟨c, e_i⟩``. Items
    the query named only vaguely but that resemble its clear top hits move up; every result is
    still an item the constrained beam reached. ``nodes``/``scores`` ``[B, M]`` sorted best
    first (rows ``-1`` where the beam ran short); returns them re-sorted.
    """
    if docs < 1 or weight <= 0:
        return nodes, scores
    valid = nodes >= 0
    emb = model.nodes[-1][nodes.clamp(min=0)].float()  # [B, M, dim]
    top = (emb[:, :docs] * valid[:, :docs, None]).sum(1) / valid[:, :docs].sum(1, keepdim=True).clamp(min=1)
    fb = model.scale().float() * (emb @ top.unsqueeze(-1)).squeeze(-1)  # [B, M]
    new = (scores.float() + weight * fb).masked_fill(~valid, float("-inf"))
    new, order = new.sort(dim=-1, descending=True)
    return nodes.gather(1, order), new.to(scores.dtype)
