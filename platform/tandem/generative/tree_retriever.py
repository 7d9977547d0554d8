"""``TreeRetriever``: a v2 model folder behind the :class:`~tandem.retriever.Retriever` interface.

A query is encoded by the (adapted) pretrained encoder and its semantic ID decoded down the
ID tree with :func:`~tandem.generative.tree_decoding.tree_beam_search`: every result is an
existing item's ID. Scores are the decoder's item-level logits (higher is better).

Serving runs the decoder in bf16 where the CPU computes it natively (AMX) or on CUDA:
candidate scoring is memory-bound, and halving the bytes halves its time (measured by
``bench.decoding_v2``). New items become findable without retraining
(:meth:`TreeRetriever.add_items`): each gets an ID in the reserved space of its nearest leaf,
and its item embedding is its own encoded text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tandem.errors import InvalidInput
from tandem.generative.tree_artifact import load_tree_model
from tandem.generative.tree_decoding import (QueryLevels, Rank, forced_log_probs, host_rows, level_log_probs,
                                             prf_rescore, query_levels, row_dots, tree_beam_search_levels)
from tandem.retriever import Hit, Retriever, validate_queries, validate_scoring

#: Characters of a query that reach the tokenizer; far above the encoder's token limit.
MAX_QUERY_CHARS = 4096
#: Recent queries whose encoder outputs are kept for :meth:`TreeRetriever.score_items`: the
#: searcher scores every candidate right after retrieving, so the query is not encoded twice.
RECENT_ENCODINGS = 256
#: Pseudo-relevance feedback by default: 2 feedback items at weight 0.25 over an item beam of
#: 300, chosen on one half of Home Depot dev by ``python -m bench.prf`` and judged on the
#: other (616 queries): nDCG@10 0.2948 -> 0.2984, R@100 0.6427 -> 0.6555.
PRF_DOCS, PRF_WEIGHT, PRF_POOL = 2, 0.25, 300


@dataclass
class _Encoded:
    """One query's encoder outputs (``q`` ``[1, dim]``, ``states``/``mask`` trimmed to its tokens)
    and, once it was decoded, its :class:`~tandem.generative.tree_decoding.QueryLevels`."""

    q: torch.Tensor
    states: torch.Tensor
    mask: torch.Tensor
    levels: QueryLevels | None = None


class TreeRetriever(Retriever):
    """Constrained decoding over the ID tree of a v2 model folder."""

    name = "generative"
    #: :meth:`score_items`: log-probability of the item's whole ID (forced decoding) and the
    #: cosine of the query's pooled vector with the item's embedding.
    score_names = ("gen_logprob", "gen_cosine")

    def __init__(self, model_dir: str | Path, *, device: str = "auto", num_beams: int = 100, upper_beam: int = 1000,
                 batch_size: int = 32, rank: Rank = "last", precision: str = "auto",
                 adapter: str | Path | None = None, prf_docs: int = PRF_DOCS, prf_weight: float = PRF_WEIGHT,
                 prf_pool: int = PRF_POOL) -> None:
        """Load and verify ``model_dir`` (and ``adapter``, an hourly adapter folder trained on it:
        its new items join the tree, its LoRA is merged). ``num_beams`` is the item-level beam
        (a call with a larger ``k`` widens it to ``k``); ``upper_beam`` the beam at the cluster levels.
        ``prf_docs``/``prf_weight`` (0: off): pseudo-relevance feedback re-ranks an item beam of
        ``prf_pool`` (:func:`~tandem.generative.tree_decoding.prf_rescore`)."""
        from tandem.generative.model import pick_device, use_bf16

        if num_beams < 1 or upper_beam < 1 or batch_size < 1 or prf_pool < 1:
            raise InvalidInput("`num_beams`, `upper_beam`, `batch_size` and `prf_pool` must be >= 1")
        if prf_docs < 0 or not 0.0 <= prf_weight <= 10.0:
            raise InvalidInput(f"`prf_docs` must be >= 0 and `prf_weight` in [0, 10], got {prf_docs}, {prf_weight}")
        if rank not in ("last", "path"):
            raise InvalidInput(f"`rank` must be 'last' or 'path', got {rank!r}")
        self.device = pick_device(device)
        self.artifact = load_tree_model(Path(model_dir), self.device)
        adapter_sha = ""
        if adapter is not None:
            from tandem.generative.tree_adapter import WEIGHTS, attach_tree_adapter

            adapter_sha = "+" + str(attach_tree_adapter(self.artifact, Path(adapter))["files"][WEIGHTS])[:12]
        self.num_beams, self.upper_beam, self.batch_size, self.rank = num_beams, upper_beam, batch_size, rank
        self.prf = (prf_docs, prf_weight, prf_pool) if prf_docs and prf_weight else None
        self.dtype = torch.bfloat16 if use_bf16(precision, self.device) else torch.float32
        self.artifact.model.to(self.dtype)
        self._item_ids = self.artifact.id_map.item_ids()
        self._row_of = {iid: row for row, iid in enumerate(self._item_ids)}
        files = self.artifact.manifest.get("files", {})
        self._version = f"{self.artifact.id_map.version}-{str(files.get('decoder.safetensors', ''))[:12]}{adapter_sha}"
        self.truncated = 0
        self._recent: OrderedDict[str, _Encoded] = OrderedDict()
        self._recent_lock = threading.Lock()

    def version(self) -> str:
        """ID-map version and the decoder checksum's prefix: changes with either."""
        return self._version

    def _encode(self, queries: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[_Encoded]]:
        """Encode a batch; each query's outputs are also remembered (returned last, in order)."""
        enc = self.artifact.encoder
        ids, mask = enc.tokenize([q[:MAX_QUERY_CHARS] for q in queries])
        self.truncated += int((mask.sum(1) >= enc.max_length).sum())
        with torch.inference_mode():
            states = enc.states(ids, mask)
            q = enc.pool(states, mask)
        q, states = q.to(self.dtype), states.to(self.dtype)
        lengths = mask.sum(1).tolist()
        # one row per query, trimmed and copied (not a view of the batch)
        rows = [_Encoded(q[i : i + 1].clone(), states[i : i + 1, : int(n)].clone(), mask[i : i + 1, : int(n)].clone())
                for i, n in enumerate(lengths)]
        with self._recent_lock:
            for text, row in zip(queries, rows, strict=True):
                self._recent[text] = row
                self._recent.move_to_end(text)
            while len(self._recent) > RECENT_ENCODINGS:
                self._recent.popitem(last=False)
        return q, states, mask, rows

    def _encoded(self, query: str) -> _Encoded:
        """The encoder outputs of one query: remembered from a recent :meth:`retrieve`, else computed."""
        with self._recent_lock:
            hit = self._recent.get(query)
        return hit if hit is not None else self._encode([query])[3][0]

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top ``k`` items per query by item-level score, equal scores by item id (so shards
        merged by :func:`~tandem.generative.sharding.merge_hits` cut the same ``k``); see
        :class:`Retriever`."""
        validate_queries(queries, k)
        if not queries:
            return []
        art = self.artifact
        pool = max(self.num_beams, k, self.prf[2] if self.prf else 0)
        beams = [max(self.upper_beam, pool)] * (art.index.length - 1) + [pool]
        out: list[list[Hit]] = []
        for start in range(0, len(queries), self.batch_size):
            q, states, mask, remembered = self._encode(queries[start : start + self.batch_size])
            nodes, scores, levels = tree_beam_search_levels(art.model, art.index, q, states, mask, beams=beams,
                                                            rank=self.rank)
            if levels is not None:  # item scores of these queries reuse them (see score_items)
                for i, enc in enumerate(remembered):
                    enc.levels = levels.row(i)
            if self.prf is not None:
                nodes, scores = prf_rescore(art.model, nodes, scores, docs=self.prf[0], weight=self.prf[1])
            for row_nodes, row_scores in zip(nodes.tolist(), scores.float().tolist(), strict=True):
                hits = [Hit(self._item_ids[n], float(s), self.name) for n, s in zip(row_nodes, row_scores) if n >= 0]
                hits.sort(key=lambda h: (-h.score, h.item_id))  # equal scores (bf16 rounds to ~3 digits) by id
                out.append(hits[:k])
        return out

    def score_items(self, query: str, item_ids: Sequence[str]) -> list[tuple[float, ...] | None]:
        """``(gen_logprob, gen_cosine)`` of each known item for ``query``; ``None`` for unknown ids.

        The model's judgement of candidates other sources found, for learned fusion: the
        forced decoding of every item's ID (see :mod:`~tandem.generative.tree_decoding`). A
        query just retrieved costs no encoder pass and no pass over the item table: its
        per-level decoder states and softmax normalisers are remembered from beam search, so
        scoring 200 items is a gather of their (distinct) path nodes and one small matmul per
        level. Otherwise they are computed once here (and remembered).
        """
        validate_scoring(query, item_ids)
        rows = [self._row_of.get(i, -1) for i in item_ids]
        known = [r for r in rows if r >= 0]
        if not known:
            return [None] * len(rows)
        art = self.artifact
        enc = self._encoded(query)
        known_rows = np.asarray(known, np.int64)
        with torch.inference_mode():
            emb = host_rows(art.model.nodes[-1], known_rows)  # [M, dim] float32, shared by both scores
            if art.model.decoder_config.condition_on_prefix:
                logp = forced_log_probs(art.model, art.index, enc.q, enc.states, enc.mask, torch.from_numpy(known_rows))
            else:
                if enc.levels is None:
                    enc.levels = query_levels(art.model, enc.q, enc.states, enc.mask)
                logp = level_log_probs(art.model, art.index, enc.levels, known_rows, item_vectors=emb)
            qv = enc.q[0].float().cpu().numpy()
        # the cosine of the query's pooled vector with each item embedding (as F.normalize: norms >= 1e-12)
        cos = row_dots(emb, qv) / np.maximum(np.sqrt(np.einsum("ij,ij->i", emb, emb)), 1e-12)
        it = iter(zip(logp.tolist(), cos.tolist(), strict=True))
        return [next(it) if r >= 0 else None for r in rows]

    def add_items(self, items: Sequence[Any]) -> dict[str, tuple[int, ...]]:
        """Give new items IDs in the reserved space and make them decodable at once.

        Items already known keep their IDs (replaying an event is harmless). Returns the
        codes of every given item.
        """
        from tandem.ids.idmap import coerce_items

        art = self.artifact
        batch = coerce_items(items)
        codes = art.id_map.assign(batch)
        new = [it for it in batch if it.item_id not in self._row_of]
        if not new:
            return codes
        from tandem.generative.tree_artifact import append_items

        vecs, _ = art.encoder.encode([it.text() for it in new])
        append_items(art, [codes[it.item_id] for it in new], torch.from_numpy(np.asarray(vecs)))
        with self._recent_lock:  # the item level's softmax now spans the new items: normalisers are stale
            for enc in self._recent.values():
                enc.levels = None
        for it in new:
            self._row_of[it.item_id] = len(self._item_ids)
            self._item_ids.append(it.item_id)
        self._version = f"{art.id_map.version}-{self._version.split('-', 1)[1]}"
        return codes

    def close(self) -> None:
        """Drop the model (and its GPU memory). Idempotent."""
        if getattr(self, "artifact", None) is not None:
            del self.artifact
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def open_tree_retriever(model_dir: Path, *, adapter: str | Path | None = None, normalize: str | None = None,
                        num_beams: int | str = 100, upper_beam: int | str = 1000, batch_size: int | str = 32,
                        device: str = "auto", rank: str = "last", precision: str = "auto",
                        prf_docs: int | str = PRF_DOCS, prf_weight: float | str = PRF_WEIGHT,
                        prf_pool: int | str = PRF_POOL) -> TreeRetriever:
    """A :class:`TreeRetriever` from loader options (strings from CLI flags are converted).

    ``normalize`` belongs to v1 T5 models and is ignored (v2 ranks by ``rank``); ``adapter``
    is an hourly adapter folder trained on this base (:mod:`tandem.generative.tree_adapter`).
    """
    del normalize
    try:
        beams, upper, batch = int(num_beams), int(upper_beam), int(batch_size)
        prf = {"prf_docs": int(prf_docs), "prf_weight": float(prf_weight), "prf_pool": int(prf_pool)}
    except ValueError as exc:
        raise InvalidInput(f"generative options: {exc}") from None
    return TreeRetriever(model_dir, device=device, num_beams=beams, upper_beam=upper, batch_size=batch,
                         rank=rank, precision=precision, adapter=adapter, **prf)  # type: ignore[arg-type]
