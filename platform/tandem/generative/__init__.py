"""The generative retriever: seq2seq model, tokenizer, artifacts, constrained decoding, retriever.

Modules (each imports torch/transformers lazily or only where needed):
``tokenizer`` (BPE + task, sentinel and semantic-ID tokens), ``model`` (T5 size presets,
pretrained start), ``artifacts`` (model folder with checksummed manifest; never unpickles),
``idmap`` (the model's view of :class:`tandem.ids.IdMap`), ``decoding`` (vectorised
trie-constrained beam search), ``retriever`` (:class:`GenerativeRetriever`, optionally with
an adapter merged in), ``tree_model`` / ``tree_decoding`` / ``tree_artifact`` /
``tree_retriever`` (v2: pretrained encoder + ID-tree decoder, the default), ``adapter_artifact`` (hourly adapter folders and attaching them to a
base), ``reload`` (:class:`HotSwapRetriever`: the registry's current base + adapter, swapped
without dropping requests), ``ensemble`` (averaged ID scores of several models), ``peft_adapters`` (reading and merging
PEFT adapters), ``loading`` (:func:`load_retriever`: any model folder as a retriever).
"""

from __future__ import annotations

from tandem.generative.loading import load_retriever

__all__ = ["load_retriever"]
