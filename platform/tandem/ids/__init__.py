"""Semantic IDs: hierarchical item codes, reserved space for new items, and the prefix trie.

``build_semantic_ids(items, config)`` gives every item a fixed-length code tuple (cluster
levels + a suffix); the returned :class:`IdMap` maps item ids to codes and back, assigns
IDs to new items without touching existing ones, saves/loads itself and reports codebook
stats. :class:`~tandem.ids.trie.PrefixTrie` holds token-id sequences for constrained
decoding (the model decides how codes map to tokens).
"""

from tandem.ids.build import build_semantic_ids
from tandem.ids.config import EmbedderConfig, SemanticIdConfig
from tandem.ids.embed import Embedder, SentenceTransformerEmbedder, TfidfSvdEmbedder
from tandem.ids.idmap import IdMap
from tandem.ids.trie import PrefixTrie

__all__ = [
    "Embedder", "EmbedderConfig", "IdMap", "PrefixTrie", "SemanticIdConfig",
    "SentenceTransformerEmbedder", "TfidfSvdEmbedder", "build_semantic_ids",
]
