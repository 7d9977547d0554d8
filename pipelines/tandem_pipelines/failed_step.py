"""The failed-query step, run before each hourly adapter (issue 22 item 2), as a plain
function over local paths like :mod:`tandem_pipelines.steps`.

Reads the period's failed searches (the JSONL the failed-query collector writes from
``tandem.failed-queries``), the feedback store (later clicks of the same users) and the
catalog snapshot (its title vocabulary), runs one cycle (:func:`tandem.failed.cycle.run_cycle`)
and leaves ``samples.jsonl`` (corrective query → item samples the adapter trains on beside
its replayed old examples), ``corrections.json`` and ``report.json`` in ``out``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput


def failed_query_step(failed: Path, catalog: Path, out: Path, *, feedback_db: Path | None = None,
                      search: Callable[[str], Sequence[str]] | None = None, min_count: int = 1) -> dict[str, Any]:
    """Run one failed-query cycle (module docstring); returns its report."""
    from tandem.catalog.loaders import load_items
    from tandem.failed.cycle import run_cycle
    from tandem.failed.diagnose import Vocabulary
    from tandem.failed.stream import read_failed
    from tandem.feedback.store import FeedbackStore

    if min_count < 1:
        raise InvalidInput(f"`min_count` must be >= 1, got {min_count}")
    if not Path(catalog).is_file():
        raise InvalidInput(f"`catalog` {catalog} does not exist")
    vocab = Vocabulary(it.title for it in load_items(catalog).items)
    events: list[Any] = []
    if feedback_db is not None:
        if not Path(feedback_db).is_file():
            raise InvalidInput(f"`feedback_db` {feedback_db} does not exist")
        with FeedbackStore(feedback_db) as store:
            events = [e for _, e in store.events()]
    return run_cycle(read_failed(failed), vocab, out, feedback=events, search=search, min_count=min_count)
