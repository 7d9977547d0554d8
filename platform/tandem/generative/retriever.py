"""``GenerativeRetriever``: a trained model folder behind the :class:`~tandem.retriever.Retriever` interface.

A query is encoded behind the ``<q2id>`` task prefix and the model's ID tokens are decoded
with the vectorised trie-constrained beam search, so every result is an existing item's
ID. Scores are sequence log-probabilities ``log p(id | query)`` (higher is better).

Long queries: the encoder sees at most ``max_input_length - 1`` query tokens (the manifest's
``max_input_length`` minus the prefix); longer queries keep their first tokens and lose the
rest, which is where product queries put the product anyway. Text beyond
``MAX_QUERY_CHARS`` characters is cut before tokenising so a huge query cannot stall the
tokenizer. Truncation is silent by design (search boxes do the same) but counted in
:attr:`GenerativeRetriever.truncated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from tandem.errors import InvalidInput
from tandem.retriever import Hit, Retriever, validate_queries

if TYPE_CHECKING:
    import torch

    from tandem.generative.artifacts import GenerativeArtifact

#: Characters of a query that reach the tokenizer; far above any model's token limit.
MAX_QUERY_CHARS = 4096


def _check_options(num_beams: int, batch_size: int) -> None:
    if num_beams < 1:
        raise InvalidInput(f"`num_beams` must be >= 1, got {num_beams}")
    if batch_size < 1:
        raise InvalidInput(f"`batch_size` must be >= 1, got {batch_size}")


class GenerativeRetriever(Retriever):
    """Constrained-decoding retrieval over the items of a trained model folder."""

    name = "generative"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        adapter: str | Path | None = None,
        device: str = "auto",
        num_beams: int = 10,
        batch_size: int = 32,
        normalize: Literal["full", "level"] = "full",
    ) -> None:
        """Load and verify ``model_dir`` (see :mod:`tandem.generative.artifacts`).

        ``adapter``: an adapter folder trained on this base (``tandem train adapter``); it is
        merged into the weights and its extended ID map (new items in the reserved code
        space) defines the trie. ``num_beams`` is a floor: a call with a larger ``k`` widens
        the beam to ``k`` so that ``k`` distinct items can come back. ``normalize="level"``
        is faster (it scores only each position's ID tokens) and ranks alike for a
        well-trained model; ``"full"`` returns the model's exact log-probabilities.
        """
        from tandem.generative.artifacts import load_artifact
        from tandem.generative.model import pick_device

        _check_options(num_beams, batch_size)
        dev = pick_device(device)
        if adapter:
            from tandem.generative.adapter_artifact import attach_adapter

            # Merged on the CPU, as loaded, then moved: the adapter tensors follow the base.
            artifact = attach_adapter(load_artifact(Path(model_dir), "cpu"), Path(adapter))
            artifact.model.to(dev).eval()  # type: ignore[arg-type]  # transformers stub types .to as a PreTrainedModel wrapper
        else:
            artifact = load_artifact(Path(model_dir), dev)
        self._setup(artifact, dev, num_beams, batch_size, normalize)

    @classmethod
    def from_artifact(cls, artifact: GenerativeArtifact, *, num_beams: int = 10, batch_size: int = 32,
                      normalize: Literal["full", "level"] = "full") -> GenerativeRetriever:
        """A retriever over an already loaded (or freshly trained) artifact, on its model's device.

        Used by adapter training to measure recall before and after without writing folders.
        """
        _check_options(num_beams, batch_size)
        self = cls.__new__(cls)
        self._setup(artifact, next(artifact.model.parameters()).device, num_beams, batch_size, normalize)
        return self

    def _setup(self, artifact: GenerativeArtifact, device: torch.device, num_beams: int, batch_size: int,
               normalize: Literal["full", "level"]) -> None:
        from tandem.ids.trie import PrefixTrie

        self.device = device
        self.artifact = artifact
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.normalize = normalize
        self.truncated = 0
        tok = artifact.tokenizer
        id_map = artifact.id_map
        self._item_ids: list[str] = id_map.item_ids()
        codes = np.asarray(id_map.as_array(), dtype=np.int64)
        # Token id of code c at position p is id_table[p, c]; the trie holds token ids.
        tokens = tok.id_table[np.arange(tok.id_length)[None, :], codes]
        self.trie = PrefixTrie.from_sequences(tokens)
        files = artifact.manifest.get("files", {})
        self._version = f"{id_map.version}-{str(files.get('model.safetensors', ''))[:12]}"
        if artifact.adapter_manifest is not None:
            from tandem.generative.peft_adapters import ADAPTER_WEIGHTS

            adapter_files = artifact.adapter_manifest.get("files", {})
            self._version += f"+{str(adapter_files.get(ADAPTER_WEIGHTS, ''))[:12]}"

    def version(self) -> str:
        """ID-map version and prefixes of the weights' (and adapter's) checksums: changes with any."""
        return self._version

    def _encode(self, queries: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        tok = self.artifact.tokenizer
        limit = self.artifact.max_input_length - 1  # one slot for the task prefix
        full = tok.encode_texts([q[:MAX_QUERY_CHARS] for q in queries], MAX_QUERY_CHARS + 1)
        rows = []
        for ids in full:
            if len(ids) > limit:  # keep the first tokens, and the EOS the model was trained with
                self.truncated += 1
                ids = [*ids[: limit - 1], tok.eos_id]
            rows.append([tok.task_ids["q2id"], *ids])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask = (input_ids != tok.pad_id).long()
        return input_ids.to(self.device), mask.to(self.device)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top ``k`` items per query by ``log p(id | query)``; see :class:`Retriever`."""
        from tandem.generative.decoding import constrained_beam_search

        validate_queries(queries, k)
        if not queries:
            return []
        beams = max(self.num_beams, k)
        out: list[list[Hit]] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start : start + self.batch_size]
            decoded = constrained_beam_search(self.artifact.model, self._encode(chunk), self.trie,
                                              num_beams=beams, num_return=beams, normalize=self.normalize)
            for row in decoded:
                hits: list[Hit] = []
                seen: set[str] = set()
                for d in row:
                    item_id = self._item_ids[d.leaf]
                    if item_id not in seen:
                        seen.add(item_id)
                        hits.append(Hit(item_id, float(d.logprob), self.name))
                    if len(hits) == k:
                        break
                out.append(hits)
        return out

    def close(self) -> None:
        """Drop the model (and its GPU memory). Idempotent."""
        art = getattr(self, "artifact", None)
        if art is not None:
            del self.artifact
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
