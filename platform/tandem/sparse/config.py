"""Configuration of the BM25 index and searcher, and the metadata saved next to an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.errors import CorruptArtifact, NotFound
from tandem.versioned import check_format_version, drop_unknown_keys


#: Item fields indexed as separate Lucene fields besides ``contents`` (all text of the item).
ITEM_FIELDS: tuple[str, ...] = ("title", "brand", "category", "attributes", "description")
SEARCHABLE_FIELDS: tuple[str, ...] = ("contents", *ITEM_FIELDS)

META_FILE = "tandem-index.json"
META_FORMAT_VERSION = "1.0"


class SparseConfig(BaseModel):
    """How the BM25 index is analysed and searched.

    Index-time options (``stemmer``, ``keep_stopwords``, ``store_docvectors``) are saved in
    the index metadata; an index is always opened (and appended to) with the options it was
    built with, whatever this object says, because Lucene rejects documents whose field
    options differ and mixing analysers would silently break matching.

    Long queries: a query longer than ``max_query_chars`` characters is truncated at the
    last whitespace before the limit and a warning is logged (Lucene caps a query at 1,024
    clauses and would otherwise fail with ``TooManyClauses`` deep inside the JVM).

    Defaults are Anserini's (k1=0.9, b=0.4, ``contents``, no RM3). On Home Depot dev they
    were kept on evidence: the best k1/b on 1,500 train queries (0.6/0.6) gains +0.001
    nDCG@10 on dev (paired randomisation p=0.31), RM3 loses 0.025, and the products carry
    titles only, so field boosts cannot change anything there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k1: float = Field(default=0.9, gt=0, le=10)
    """BM25 term-frequency saturation (Anserini's default 0.9)."""
    b: float = Field(default=0.4, ge=0, le=1)
    """BM25 length normalisation (Anserini's default 0.4)."""
    fields: dict[str, float] = Field(default_factory=lambda: {"contents": 1.0})
    """Field → boost of the query. ``contents`` holds all of an item's text; the item fields
    are also indexed separately (title, brand, category, attributes, description)."""
    rm3: bool = False
    """Expand queries with RM3 pseudo-relevance feedback (needs ``store_docvectors``)."""
    rm3_fb_terms: int = Field(default=10, ge=1, le=100)
    """RM3: expansion terms taken from the feedback documents."""
    rm3_fb_docs: int = Field(default=10, ge=1, le=100)
    """RM3: top documents used as feedback."""
    rm3_original_query_weight: float = Field(default=0.5, ge=0, le=1)
    """RM3: weight of the original query against the expansion."""
    stemmer: str = "porter"
    """Index-time: ``porter``, ``krovetz`` or ``none`` (Anserini's DefaultEnglishAnalyzer)."""
    keep_stopwords: bool = False
    """Index-time: keep stopwords instead of removing Lucene's default English list."""
    store_docvectors: bool = True
    """Index-time: store term vectors (needed by RM3; costs index size)."""
    index_threads: int = Field(default=2, ge=1, le=64)
    """Threads used by a full index build."""
    search_threads: int = Field(default=2, ge=1, le=64)
    """Threads used by a batch ``retrieve`` call."""
    max_query_chars: int = Field(default=1000, ge=16, le=100_000)
    """Queries longer than this are truncated at a word boundary, with a warning."""

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("`fields` needs at least one field")
        for name, boost in value.items():
            if name not in SEARCHABLE_FIELDS:
                raise ValueError(f"`fields` key {name!r} is not one of {', '.join(SEARCHABLE_FIELDS)}")
            if boost <= 0:
                raise ValueError(f"`fields[{name}]` boost must be > 0, got {boost}")
        return value

    @field_validator("stemmer")
    @classmethod
    def _check_stemmer(cls, value: str) -> str:
        if value not in ("porter", "krovetz", "none"):
            raise ValueError(f"`stemmer` must be porter, krovetz or none, got {value!r}")
        return value

    def index_options(self) -> dict[str, Any]:
        """The index-time subset, as saved in the metadata."""
        return {"stemmer": self.stemmer, "keep_stopwords": self.keep_stopwords, "store_docvectors": self.store_docvectors}


class IndexMeta(BaseModel):
    """What ``tandem-index.json`` records about an index (format-versioned)."""

    model_config = ConfigDict(extra="ignore")

    format_version: str = META_FORMAT_VERSION
    index_id: str
    """Random id of this build; part of :meth:`SparseRetriever.version`."""
    stemmer: str
    keep_stopwords: bool
    store_docvectors: bool
    fields: list[str]
    documents: int
    catalog_sha1: str | None = None
    built_at: float

    def save(self, index_dir: Path) -> None:
        """Write the metadata next to the Lucene files."""
        (index_dir / META_FILE).write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def load(cls, index_dir: Path) -> IndexMeta:
        """Read the metadata; newer minor versions load, unknown keys are dropped with a warning."""
        path = index_dir / META_FILE
        if not path.is_file():
            raise NotFound(f"`index_dir` {index_dir} is not a Tandem BM25 index (no {META_FILE}); build it first")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CorruptArtifact(f"{path}: invalid JSON ({e})") from e
        check_format_version(raw.get("format_version", "0"), META_FORMAT_VERSION, path)
        return cls.model_validate(drop_unknown_keys(raw, cls.model_fields, path))
