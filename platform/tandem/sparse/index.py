"""Building a BM25 index from a catalog with Anserini's ``IndexCollection``.

The bulk build goes through Anserini's own indexer (JsonCollection +
DefaultLuceneDocumentGenerator), the same code path as its regressions; live updates
(:meth:`SparseRetriever.upsert`) reuse that generator with the same arguments, so both
paths produce identical Lucene documents.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.errors import InvalidInput, TandemError
from tandem.sparse._java import java, java_errors, jpath
from tandem.sparse.config import ITEM_FIELDS, IndexMeta, SparseConfig
from tandem.sparse.documents import to_json_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexStats:
    """Counts describing an index (after a build, or live from :meth:`SparseRetriever.stats`)."""

    documents: int
    """Live (non-deleted) documents."""
    deleted: int = 0
    """Deleted documents not yet merged away."""
    unique_terms: int | None = None
    """Distinct terms of the ``contents`` field."""
    total_terms: int | None = None
    """Term occurrences in the ``contents`` field."""
    build_seconds: float | None = None
    """Wall time of the build (builds only)."""
    index_dir: str = ""
    version: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return asdict(self)


def indexer_args(meta: IndexMeta, input_dir: str | Path = "", index_dir: str | Path = "", threads: int = 1) -> Any:
    """Anserini ``IndexCollection.Args`` for the options recorded in ``meta``.

    Used by the bulk build and by every upsert, so documents added later carry exactly the
    field options of the original build. Parsed with args4j like Anserini's own command
    line (pyjnius cannot assign Java array fields directly).
    """
    j = java()
    from jnius import autoclass

    argv = [
        "-collection", "JsonCollection",
        "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(input_dir or "."),
        "-index", str(index_dir or "."),
        "-threads", str(threads),
        "-storePositions", "-storeRaw",
        "-stemmer", meta.stemmer,
        "-fields", *meta.fields,
        "-optimize", "-quiet",
    ]  # fmt: skip
    if meta.store_docvectors:
        argv.append("-storeDocvectors")
    if meta.keep_stopwords:
        argv.append("-keepStopwords")
    args = j.IndexCollectionArgs()
    autoclass("org.kohsuke.args4j.CmdLineParser")(args).parseArgument(*argv)
    return args


def analyzer_for(meta: IndexMeta) -> Any:
    """The analyzer the index was built with (Anserini's DefaultEnglishAnalyzer options)."""
    return java().DefaultEnglishAnalyzer.fromArguments(meta.stemmer, meta.keep_stopwords, None)


def catalog_sha1(items: Iterable[Item]) -> str:
    """Content hash of a catalog (order-sensitive), used to key cached indexes."""
    h = hashlib.sha1()
    for item in items:
        h.update(item.model_dump_json().encode())
        h.update(b"\n")
    return h.hexdigest()


def build_index(items: Iterable[Item], index_dir: str | Path, config: SparseConfig | None = None) -> IndexStats:
    """Build a fresh index of ``items`` at ``index_dir``, replacing any index there.

    The new index is written next to the target and moved into place at the end, so a
    failed build leaves the previous index untouched. Item ids must be unique.
    """
    cfg = config or SparseConfig()
    target = Path(index_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    items = list(items)
    if not items:
        raise InvalidInput("`items` is empty; an index needs at least one item")
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise InvalidInput(f"`items` contains `item_id` {item.item_id!r} twice")
        seen.add(item.item_id)
    meta = IndexMeta(
        index_id=uuid.uuid4().hex[:12],
        fields=list(ITEM_FIELDS),
        documents=len(items),
        catalog_sha1=catalog_sha1(items),
        built_at=time.time(),
        **cfg.index_options(),
    )
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        shards = min(cfg.index_threads, len(items))
        input_dir = work / "input"
        input_dir.mkdir()
        # JsonCollection gives one indexing thread per file, so write one file per thread.
        files = [open(input_dir / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(shards)]
        try:
            for n, item in enumerate(items):
                files[n % shards].write(to_json_line(item) + "\n")
        finally:
            for f in files:
                f.close()
        out = work / "index"
        _run_indexer(meta, input_dir, out, shards)
        meta.save(out)
        if target.exists():
            old = work / "old"
            target.rename(old)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    counts = index_counts(target)  # read back: proof the index is complete
    if counts["documents"] != len(items):
        raise TandemError(f"index build wrote {counts['documents']} documents for {len(items)} items")
    log.info("built BM25 index of %d items at %s in %.1fs", len(items), target, seconds)
    return IndexStats(build_seconds=seconds, index_dir=str(target), version=meta.index_id, **counts)


def index_counts(index_dir: str | Path) -> dict[str, Any]:
    """Document and term counts of the committed index at ``index_dir``."""
    j = java()
    reader = j.DirectoryReader.open(j.FSDirectory.open(jpath(index_dir)))
    try:
        return _reader_counts(reader)
    finally:
        reader.close()


def _reader_counts(reader: Any) -> dict[str, Any]:
    from jnius import cast

    # Anserini walks the term dictionary in Java; across several segments Lucene cannot
    # count distinct terms cheaply and reports -1, surfaced here as None.
    reader = cast("org.apache.lucene.index.IndexReader", reader)
    stats = java().IndexReaderUtils.getIndexStats(reader, "contents")
    unique = int(stats.get("unique_terms"))
    return {
        "documents": int(reader.numDocs()),
        "deleted": int(reader.numDeletedDocs()),
        "unique_terms": unique if unique >= 0 else None,
        "total_terms": int(stats.get("total_terms")),
    }


@java_errors("index build")
def _run_indexer(meta: IndexMeta, input_dir: Path, out: Path, threads: int) -> None:
    # -optimize: one segment, faster search; the index is rebuilt rarely.
    args = indexer_args(meta, input_dir, out, threads)
    indexer = java().IndexCollection(args)
    indexer.run()
    counters = indexer.getCounters()
    errors = int(counters.errors.get())
    if errors:
        raise TandemError(f"Anserini reported {errors} indexing errors")
