"""A BM25 source whose index is still to be written by the ingest consumer.

On a fresh install the sparse pods start together with the ingest consumer, which creates the
Lucene index only when its first item events arrive (``tandem.streams.apply.LazyBM25Index``,
built aside and moved into place). A sparse server that exits because the index is missing
crash-loops, and Kubernetes' restart back-off (up to 5 minutes) then delays BM25 long after
the index exists. :class:`AwaitedIndex` serves instead: every search of it fails with
UNAVAILABLE naming the path (the gateway answers from its other sources, marked degraded),
a background thread checks for the index every ``poll_s``, and once it exists the index is
opened (following the writer's commits) and served from then on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tandem.errors import Unavailable
from tandem.retriever import Hit, Retriever, validate_queries

log = logging.getLogger("tandem_services.sparse")


def index_exists(index_dir: Path) -> bool:
    """Whether a complete Tandem BM25 index is at ``index_dir`` (its metadata file is written
    inside the new index before the index is moved into place)."""
    from tandem.sparse.config import META_FILE

    return (index_dir / META_FILE).is_file()


class AwaitedIndex(Retriever):
    """Serves ``open_index()`` once ``index_dir`` holds an index; UNAVAILABLE until then."""

    def __init__(self, index_dir: str | Path, open_index: Callable[[], Retriever], *, name: str = "bm25",
                 poll_s: float = 1.0) -> None:
        self.index_dir = Path(index_dir)
        self.name = name
        self._open_index = open_index
        self._inner: Retriever | None = None
        self._mu = threading.Lock()
        self._closed = threading.Event()
        log.warning("BM25 index %s does not exist yet; serving UNAVAILABLE until the ingest consumer writes it",
                    self.index_dir)
        threading.Thread(target=self._wait, args=(poll_s,), name="tandem-bm25-await", daemon=True).start()

    def _wait(self, poll_s: float) -> None:
        while self._inner is None and not self._closed.wait(poll_s):
            try:
                self._try_open()
            except Exception:  # noqa: BLE001 - keep waiting; a half-visible index is retried
                log.exception("BM25 index %s: opening failed; retrying in %.1f s", self.index_dir, poll_s)

    def _try_open(self) -> bool:
        """Open the index if it exists now; ``True`` when it became served by this call."""
        if self._inner is not None or not index_exists(self.index_dir):
            return False
        with self._mu:
            if self._inner is not None or self._closed.is_set():
                return False
            inner = self._open_index()
            inner.name = self.name
            self._inner = inner
        log.info("BM25 index %s appeared; now serving it (version %s)", self.index_dir, inner.version())
        return True

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The index's hits, or :class:`Unavailable` naming the index while it does not exist."""
        validate_queries(queries, k)
        inner = self._inner
        if inner is None:
            raise Unavailable(f"BM25 index {self.index_dir} does not exist yet: the ingest consumer writes it "
                              "when its first item events arrive (or build it with `tandem index build`)")
        return inner.retrieve(queries, k)

    def documents(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The index's stored fields (the ``Lookup`` RPC), or :class:`Unavailable` while it does not exist."""
        inner = self._inner
        if inner is None:
            raise Unavailable(f"BM25 index {self.index_dir} does not exist yet")
        return inner.documents(item_ids)  # type: ignore[attr-defined]

    def version(self) -> str:
        """The index's version once served; ``awaiting-index`` before."""
        inner = self._inner
        return inner.version() if inner is not None else "awaiting-index"

    def refresh(self) -> bool:
        """Open the index if it appeared, else refresh the served one (Admin ``Reload``)."""
        inner = self._inner
        if inner is None:
            return self._try_open()
        return inner.refresh()

    def close(self) -> None:
        """Stop waiting and close the index if it was opened."""
        with self._mu:
            self._closed.set()
            inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()
