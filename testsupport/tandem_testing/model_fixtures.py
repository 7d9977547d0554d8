"""Small, fast model folders for tests and demos (no training, or a few seconds of it).

``untrained_model_dir`` writes a complete, valid model folder around a randomly initialised
micro T5: everything that loading, verification, decoding and the retriever's input
handling do can be tested on it in well under a second of compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.generative.model import ModelSize

#: A micro T5 (≈ 60k parameters) for tests: one layer each side.
MICRO = ModelSize(d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2)


def tiny_id_map(items: Sequence[Item]) -> Any:
    """Semantic IDs for a catalog of a few dozen items: one level of 4 clusters + suffix."""
    from tandem.ids import SemanticIdConfig, build_semantic_ids

    cfg = SemanticIdConfig(levels=1, branching=4, leaf_capacity=max(8, len(items) // 2), reserved_per_leaf=1,
                           use_categories=False)
    return build_semantic_ids(items, cfg)


def untrained_model_dir(out: Path, items: Sequence[Item], *, max_input_length: int = 16, seed: int = 0) -> Path:
    """Write a model folder with a random-init micro T5 over ``items``; returns ``out``."""
    import numpy as np
    import torch

    from tandem.generative.artifacts import save_artifact
    from tandem.generative.idmap import id_space
    from tandem.generative.model import build_model
    from tandem.generative.tokenizer import train_tokenizer

    id_map = tiny_id_map(items)
    tokenizer = train_tokenizer([it.text() for it in items], 300, id_space(id_map, np.asarray(id_map.as_array())))
    torch.manual_seed(seed)
    model = build_model(MICRO, tokenizer, max_input_length)
    save_artifact(out, model, tokenizer, id_map, max_input_length=max_input_length, training={"untrained": True})
    return Path(out)
