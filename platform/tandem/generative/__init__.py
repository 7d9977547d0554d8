"""The generative retriever: seq2seq model, tokenizer, artifacts, constrained decoding, retriever.

Modules (each imports torch/transformers lazily or only where needed):
``tokenizer`` (BPE + task, sentinel and semantic-ID tokens), ``model`` (T5 size presets,
pretrained start), ``artifacts`` (model folder with checksummed manifest; never unpickles),
``idmap`` (the model's view of :class:`tandem.ids.IdMap`), ``decoding`` (vectorised
trie-constrained beam search), ``retriever`` (:class:`GenerativeRetriever`), ``fixtures``
(micro model folders for tests).
"""
