"""Opening a generative model folder as a :class:`~tandem.retriever.Retriever`, whatever its kind.

Kept apart from the retrievers themselves so that they never import the package that
dispatches to them: this module sits above ``retriever`` (v1) and ``tree_retriever`` (v2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.errors import InvalidInput

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

    opts: dict[str, Any] = {k: v for k, v in options.items() if v is not None}  # each kind checks its own
    if is_tree_folder(Path(model_dir)):
        from tandem.generative.tree_retriever import open_tree_retriever

        return open_tree_retriever(Path(model_dir), **opts)
    from tandem.generative.retriever import GenerativeRetriever

    return GenerativeRetriever(model_dir, **opts)


def generative_system(spec: object) -> Retriever:
    """Factory for ``tandem eval --system generative --model DIR`` (a ``SystemSpec``).

    Options: ``num_beams`` (default 100, so R@100 is measured over 100 distinct items),
    ``normalize``, ``batch_size``, ``device``, ``adapter`` (an adapter folder trained on this
    base). The catalog is not needed: the model folder (or the adapter) carries its ID map,
    which names every item the model can return.
    """
    model = getattr(spec, "model", None)
    if model is None:
        raise InvalidInput("`--model` is required for the generative system (a folder from `tandem train generative`)")
    from tandem.eval.systems import GENERATIVE_OPTIONS

    opts = {k: v for k, v in (getattr(spec, "options", {}) or {}).items() if k in GENERATIVE_OPTIONS}
    opts.setdefault("num_beams", 100)
    return load_retriever(model, **opts)
