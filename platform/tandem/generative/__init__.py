"""The generative retriever: seq2seq model, tokenizer, artifacts, constrained decoding, retriever.

Modules (each imports torch/transformers lazily or only where needed):
``tokenizer`` (BPE + task, sentinel and semantic-ID tokens), ``model`` (T5 size presets,
pretrained start), ``artifacts`` (model folder with checksummed manifest; never unpickles),
``idmap`` (the model's view of :class:`tandem.ids.IdMap`), ``decoding`` (vectorised
trie-constrained beam search), ``retriever`` (:class:`GenerativeRetriever`, optionally with
an adapter merged in), ``tree_model`` / ``tree_decoding`` / ``tree_artifact`` /
``tree_retriever`` (v2: pretrained encoder + ID-tree decoder, the default), ``adapter_artifact`` (hourly adapter folders and attaching them to a
base), ``reload`` (:class:`HotSwapRetriever`: the registry's current base + adapter, swapped
without dropping requests), ``ensemble`` (averaged ID scores of several models),
``fixtures`` (micro model folders for tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.retriever import Retriever


def load_retriever(model_dir: str | Path, **options: object) -> Retriever:
    """The retriever of a model folder (what ``tandem serve generative --model``, ``tandem
    search --model``, ``tandem eval --system generative`` and hot reload load).

    A v2 folder (pretrained encoder + ID-tree decoder, ``format_version`` 2.x) gives a
    :class:`~tandem.generative.tree_retriever.TreeRetriever`; a v1 T5 folder a
    :class:`~tandem.generative.retriever.GenerativeRetriever`. Options a kind does not take
    (e.g. ``normalize`` for v2) are dropped; ``None`` values mean "the default".
    """
    from tandem.generative.tree_artifact import is_tree_folder

    opts = {k: v for k, v in options.items() if v is not None}
    if is_tree_folder(Path(model_dir)):
        from tandem.generative.tree_retriever import open_tree_retriever

        return open_tree_retriever(Path(model_dir), **opts)
    from tandem.generative.retriever import GenerativeRetriever

    return GenerativeRetriever(model_dir, **opts)  # type: ignore[arg-type]
