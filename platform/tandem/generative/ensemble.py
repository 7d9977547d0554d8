"""``EnsembleRetriever``: several generative models whose ID probabilities are averaged
(seed chapter, section 5.4.2, "ensemble defence": ``p(d|q) = 1/M Σ_m p_m(d|q)``).

Each member proposes its constrained beam-search top candidates; the union is then scored
*exactly* under every member by one teacher-forced pass (``log p_m(id | query)`` over the
ID positions, the same quantity the members' beam search ranks by with
``normalize="full"``), so an item one member ranks outside its beam still gets that
member's true probability rather than zero. The ensemble score is
``log(1/M Σ_m p_m) = logsumexp_m(log p_m) − log M``.

Members must cover the same items (their ID maps may differ: each member scores an item
with its own semantic ID).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tandem.errors import InvalidInput
from tandem.retriever import Hit, Retriever, validate_queries


class EnsembleRetriever(Retriever):
    """Probability-averaging ensemble of :class:`~tandem.generative.retriever.GenerativeRetriever` models."""

    name = "ensemble"

    def __init__(self, model_dirs: Sequence[str | Path], *, device: str = "auto", num_beams: int = 10,
                 batch_size: int = 32) -> None:
        from tandem.generative.retriever import GenerativeRetriever

        if len(model_dirs) < 1:
            raise InvalidInput("`model_dirs` must name at least one model folder")
        self.members = [GenerativeRetriever(d, device=device, num_beams=num_beams, batch_size=batch_size)
                        for d in model_dirs]
        items = {frozenset(m.artifact.id_map.item_ids()) for m in self.members}
        if len(items) != 1:
            self.close()
            raise InvalidInput("`model_dirs`: the models cover different items; an ensemble needs one catalog")
        self.num_beams = num_beams
        self.batch_size = batch_size
        # Per member: item id → its ID token sequence (without EOS).
        self._tokens: list[dict[str, list[int]]] = []
        for m in self.members:
            tok, id_map = m.artifact.tokenizer, m.artifact.id_map
            self._tokens.append({i: tok.encode_id(id_map.codes(i)) for i in id_map.item_ids()})

    def version(self) -> str:
        """The members' versions joined: changes when any member changes."""
        return "+".join(m.version() for m in self.members)

    def _encode(self, member: Any, queries: Sequence[str]) -> tuple[Any, Any]:
        import torch

        tok = member.artifact.tokenizer
        ids = tok.encode_texts(list(queries), member.artifact.max_input_length - 1)
        rows = [[tok.task_ids["q2id"], *r] for r in ids]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return input_ids.to(member.device), (input_ids != tok.pad_id).long().to(member.device)

    def score(self, member_index: int, query: str, item_ids: Sequence[str]) -> np.ndarray:
        """``log p_m(id | query)`` of each item under member ``member_index`` (teacher-forced)."""
        import torch

        from tandem.generative.model import sequence_logprob

        m = self.members[member_index]
        model = m.artifact.model
        pad = m.artifact.tokenizer.pad_id
        input_ids, mask = self._encode(m, [query])
        out = np.empty(len(item_ids))
        for start in range(0, len(item_ids), 256):
            chunk = item_ids[start : start + 256]
            tgt = torch.tensor([self._tokens[member_index][i] for i in chunk], dtype=torch.long, device=m.device)
            dec = torch.cat([torch.full((len(chunk), 1), pad, dtype=torch.long, device=m.device), tgt[:, :-1]], 1)
            with torch.inference_mode():
                logits = model(input_ids=input_ids.expand(len(chunk), -1), attention_mask=mask.expand(len(chunk), -1),
                               decoder_input_ids=dec).logits
                out[start : start + len(chunk)] = sequence_logprob(logits, tgt).cpu().numpy()
        return out

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top ``k`` items per query by the averaged probability (scores: its log)."""
        validate_queries(queries, k)
        if not queries:
            return []
        width = max(self.num_beams, k)
        proposals = [m.retrieve(queries, width) for m in self.members]
        out: list[list[Hit]] = []
        log_m = math.log(len(self.members))
        for qi, query in enumerate(queries):
            cands = list(dict.fromkeys(h.item_id for p in proposals for h in p[qi]))
            if not cands:
                out.append([])
                continue
            scores = np.stack([self.score(mi, query, cands) for mi in range(len(self.members))])
            top = scores.max(0)
            combined = top + np.log(np.exp(scores - top).sum(0)) - log_m
            order = np.argsort(-combined, kind="stable")[:k]
            out.append([Hit(cands[i], float(combined[i]), self.name) for i in order])
        return out

    def close(self) -> None:
        """Close every member. Idempotent."""
        for m in getattr(self, "members", []):
            m.close()


def ensemble_system(spec: object) -> EnsembleRetriever:
    """Factory for ``tandem eval --system ensemble --model DIR``: every subfolder of ``DIR``
    holding a ``manifest.json`` is a member. Options: ``num_beams`` (default 100),
    ``batch_size``, ``device``."""
    model = getattr(spec, "model", None)
    if model is None:
        raise InvalidInput("`--model` is required for the ensemble system (a folder of model folders)")
    folder = Path(model)
    members = sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []
    if not members:
        raise InvalidInput(f"`--model` {model}: no model folders (with manifest.json) inside")
    opts = dict(getattr(spec, "options", {}) or {})
    return EnsembleRetriever(members, device=str(opts.get("device", "auto")), num_beams=int(opts.get("num_beams", 100)),
                             batch_size=int(opts.get("batch_size", 32)))
