"""The generative retriever: seq2seq model, tokenizer, artifacts, constrained decoding, retriever.

Modules (each imports torch/transformers lazily or only where needed):
``tokenizer`` (BPE + task, sentinel and semantic-ID tokens), ``model`` (T5 size presets,
pretrained start), ``artifacts`` (model folder with checksummed manifest; never unpickles),
``idmap`` (the model's view of :class:`tandem.ids.IdMap`), ``decoding`` (vectorised
trie-constrained beam search), ``retriever`` (:class:`GenerativeRetriever`, optionally with
an adapter merged in), ``adapter_artifact`` (hourly adapter folders and attaching them to a
base), ``reload`` (:class:`HotSwapRetriever`: the registry's current base + adapter, swapped
without dropping requests), ``ensemble`` (averaged ID scores of several models),
``fixtures`` (micro model folders for tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.generative.retriever import GenerativeRetriever


def load_retriever(model_dir: str, **options: object) -> GenerativeRetriever:
    """The :class:`~tandem.generative.retriever.GenerativeRetriever` of a model folder
    (what ``tandem serve generative --model`` and ``tandem search --model`` load)."""
    from tandem.generative.retriever import GenerativeRetriever

    return GenerativeRetriever(model_dir, **options)  # type: ignore[arg-type]
