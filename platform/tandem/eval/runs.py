"""Runs: ranked results per query, produced by a retriever or read from a TREC run file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from tandem.errors import InvalidInput
from tandem.retriever import Retriever

log = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]
"""qid → [(item_id, score)] in rank order (best first)."""


def run_retriever(
    retriever: Retriever,
    queries: Mapping[str, str],
    k: int = 1000,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Run:
    """Retrieve ``k`` items for every query, in batches (so retrievers can parallelise).

    ``progress`` is called with the number of queries finished after each batch.
    """
    qids = list(queries)
    run: Run = {}
    for start in range(0, len(qids), batch_size):
        chunk = qids[start : start + batch_size]
        results = retriever.retrieve([queries[q] for q in chunk], k)
        for qid, hits in zip(chunk, results):
            run[qid] = [(h.item_id, h.score) for h in hits]
        if progress:
            progress(len(chunk))
    return run


def write_trec_run(run: Run, path: str | Path, tag: str = "tandem") -> None:
    """Write ``qid Q0 docid rank score tag`` lines.

    Scores are written as given; equal scores within a query are nudged down by 1e-6 per
    tie so trec_eval-style tools (which re-sort by score) keep the system's order.
    """
    with open(path, "w", encoding="utf-8") as f:
        for qid, hits in run.items():
            prev: float | None = None
            for rank, (docid, score) in enumerate(hits, start=1):
                if prev is not None and score >= prev:
                    score = prev - 1e-6
                prev = score
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file; each ranking is re-sorted the way trec_eval does (score desc,
    then docid desc), since the rank column is advisory in that format."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`run` {str(p)!r} is not a file")
    run: Run = {}
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInput(f"`run` {p}:{lineno}: expected `qid Q0 docid rank score tag`")
            try:
                score = float(parts[4])
            except ValueError:
                raise InvalidInput(f"`run` {p}:{lineno}: score {parts[4]!r} is not a number") from None
            run.setdefault(parts[0], []).append((parts[2], score))
    for hits in run.values():
        hits.sort(key=lambda h: (h[1], h[0]), reverse=True)
    return run
