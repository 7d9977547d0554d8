"""Sparse retrieval: BM25 over Lucene (through Pyserini's Anserini), with live updates.

Importing this package does not start the JVM; building or opening an index does.
"""

from tandem.sparse.config import SEARCHABLE_FIELDS, IndexMeta, SparseConfig
from tandem.sparse.index import IndexStats, build_index, catalog_sha1
from tandem.sparse.retriever import SparseRetriever, truncate_query

__all__ = [
    "SEARCHABLE_FIELDS",
    "IndexMeta",
    "IndexStats",
    "SparseConfig",
    "SparseRetriever",
    "build_index",
    "catalog_sha1",
    "truncate_query",
]
