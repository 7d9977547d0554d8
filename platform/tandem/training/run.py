"""One generative training run from files: load, build IDs, pair queries, train (stages 1–3).

Shared by ``tandem train generative``, the demo and the pipelines, so each calls the same
code rather than re-assembling the trainer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def train_generative(catalog: Path, queries_path: Path, qrels_path: Path, out: Path, profile: str = "ci", *,
                     ids: Path | None = None, pretrained: Path | None = None, resume: bool = False,
                     seed: int | None = None, device: str | None = None, min_grade: int | None = None,
                     overrides: dict[str, Any] | None = None, progress: bool = True,
                     prepared: Path | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train a generative retriever into ``out`` and return the training summary.

    ``overrides`` replace :class:`~tandem.training.config.TrainConfig` fields of the profile.
    ``prepared`` is a folder from :func:`tandem.training.prepare.prepare_training_data`
    (pseudo-queries and a BM25 run) the trainer uses instead of computing them.
    """
    from pydantic import ValidationError

    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.config import get_settings
    from tandem.errors import InvalidInput
    from tandem.ids import IdMap, build_semantic_ids
    from tandem.training.config import id_config, profile_config
    from tandem.training.data import training_pairs
    from tandem.training.trainer import StagedTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings = get_settings()
    overrides = dict(overrides or {})
    overrides["seed"] = settings.seed if seed is None else seed
    if min_grade is not None:
        overrides["min_grade"] = min_grade
    try:
        config = profile_config(profile, **overrides)
    except ValidationError as exc:
        raise InvalidInput(f"`--set`: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    loaded = load_items(catalog)
    echo(f"catalog: {loaded.summary()}")
    queries, qrels = read_queries(queries_path), read_qrels(qrels_path)
    t0 = time.perf_counter()
    if ids is not None:
        id_map = IdMap.load(str(ids))
    elif resume and (out / "train_idmap").is_dir():
        id_map = IdMap.load(str(out / "train_idmap"))  # the IDs the checkpoint was trained on
    else:
        id_map = build_semantic_ids(loaded.items, id_config(profile).model_copy(update={"seed": config.seed}))
    out.mkdir(parents=True, exist_ok=True)
    id_map.save(str(out / "train_idmap"))
    echo(f"semantic IDs: {len(id_map)} items, code space {id_map.code_space()} "
         f"({time.perf_counter() - t0:.1f} s)")
    pairs, skipped = training_pairs(queries, qrels, set(id_map.item_ids()), config.min_grade)
    echo(f"training pairs: {len(pairs)} (grade >= {config.min_grade}); skipped {skipped}")
    pseudo = bm25 = None
    if prepared is not None:
        from tandem.training.prepare import PSEUDO_FILE, RUN_FILE, read_bm25_run, read_pseudo_queries

        if not (prepared / PSEUDO_FILE).is_file():
            raise InvalidInput(f"`prepared` {prepared} has no {PSEUDO_FILE}")
        pseudo = read_pseudo_queries(prepared / PSEUDO_FILE)
        bm25 = read_bm25_run(prepared / RUN_FILE) if (prepared / RUN_FILE).is_file() else None
        echo(f"prepared data: pseudo-queries for {len(pseudo)} items, BM25 run for {len(bm25 or {})} queries")
    trainer = StagedTrainer(config, loaded.items, id_map, pairs, out, pretrained=pretrained,
                            device=device or settings.device, progress=progress, pseudo=pseudo, bm25_run=bm25)
    return trainer.run(resume=resume)
