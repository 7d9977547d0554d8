"""BM25 search over a Lucene index with live upserts and deletes.

Searches run on Anserini's ``SimpleSearcher`` (the class behind Pyserini's
``LuceneSearcher``): same bag-of-words queries, tie-breaking by id, score rounding and
RM3 as Anserini's regressions, and batch search on Java threads. Updates go through one
Lucene ``IndexWriter`` held by the writable retriever: each :meth:`SparseRetriever.upsert`
/ :meth:`~SparseRetriever.delete` call commits and swaps in a searcher on the new commit
before returning, so changes are visible to the next search (tens of milliseconds, no
rebuild) and durable.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.errors import InvalidInput, Unavailable
from tandem.retriever import Hit, Retriever, validate_queries
from tandem.sparse._java import java, java_errors, jpath, on_jvm_thread
from tandem.sparse.config import IndexMeta, SparseConfig
from tandem.sparse.documents import to_json_line
from tandem.sparse.index import IndexStats, analyzer_for, index_counts, indexer_args

log = logging.getLogger(__name__)


def truncate_query(text: str, max_chars: int) -> str:
    """The documented long-query rule: cut at the last whitespace before ``max_chars``.

    A query with no whitespace in the second half of the range is cut at ``max_chars``.
    """
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


@java_errors("reading index statistics")
class SparseRetriever(Retriever):
    """BM25 (optionally + RM3) over a Tandem Lucene index; safe to share between threads.

    ``writable=False`` opens a read-only view (any number may share an index) that picks up
    another process's commits on :meth:`refresh` — by itself every ``follow_s`` seconds when
    given (a daemon thread polls the commit generation, which reads only ``segments_N``), so
    a serving replica follows the ingest writer within about ``follow_s``. The writable
    default holds Lucene's write lock: one retriever per index owns its updates.
    """

    name = "bm25"

    @java_errors("opening the BM25 index")
    def __init__(self, index_dir: str | Path, config: SparseConfig | None = None, *, writable: bool = True,
                 follow_s: float | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.config = config or SparseConfig()
        self.meta = IndexMeta.load(self.index_dir)
        built_with = {"stemmer": self.meta.stemmer, "keep_stopwords": self.meta.keep_stopwords,
                      "store_docvectors": self.meta.store_docvectors}  # fmt: skip
        if self.config.index_options() != built_with:
            log.warning("index %s was built with %s; searching with those, not the config's", self.index_dir, built_with)
        if self.config.rm3 and not self.meta.store_docvectors:
            raise InvalidInput("`rm3` needs an index built with `store_docvectors`; rebuild the index")
        j = java()
        self._j = j
        self._analyzer = analyzer_for(self.meta)
        self._fields = None
        if self.config.fields != {"contents": 1.0}:
            self._fields = j.HashMap()
            for name, boost in self.config.fields.items():
                self._fields.put(name, j.Float(float(boost)))
        self._closed = False
        self._stop_following = threading.Event()
        self._writer = None
        if writable:
            cfg = j.IndexWriterConfig(self._analyzer)
            cfg.setOpenMode(j.OpenMode.APPEND)
            cfg.setSimilarity(j.BM25Similarity(float(self.config.k1), float(self.config.b)))
            cfg.setUseCompoundFile(False)
            try:
                self._writer = j.IndexWriter(j.FSDirectory.open(jpath(self.index_dir)), cfg)
            except Exception as e:  # LockObtainFailedException, surfaced by jnius
                if "LockObtainFailed" in str(e) or "Lock held" in str(e):
                    raise Unavailable(
                        f"`index_dir` {self.index_dir} is open for writing elsewhere; open it with writable=False"
                    ) from None
                raise
            self._doc_generator = j.DocumentGenerator(indexer_args(self.meta))
        self._searcher: Any = None
        self._reader_version = -1
        try:
            self._open_searcher()
        except BaseException:
            if self._writer is not None:  # do not leave the write lock behind
                self._writer.close()
            raise
        if follow_s is not None:
            if follow_s <= 0:
                raise InvalidInput(f"`follow_s` must be > 0, got {follow_s}")
            threading.Thread(target=self._follow, args=(follow_s,), name="tandem-bm25-follow", daemon=True).start()

    def _follow(self, every_s: float) -> None:
        """Refresh every ``every_s`` seconds until closed; a failed check is logged, never fatal."""
        while not self._stop_following.wait(every_s):
            try:
                if self.refresh():
                    log.info("BM25 index %s: now serving commit %s", self.index_dir, self.version())
            except Unavailable:  # closed under us
                return
            except Exception:  # noqa: BLE001 - the follower must survive anything; searches go on
                log.exception("BM25 index %s: refresh failed; retrying in %.1f s", self.index_dir, every_s)

    def _open_searcher(self) -> None:
        """Open a searcher on the latest commit and swap it in (caller holds the JNI lock)."""
        j, c = self._j, self.config
        searcher = j.SimpleSearcher(str(self.index_dir), self._analyzer)
        searcher.set_bm25(float(c.k1), float(c.b))
        if c.rm3:
            searcher.set_rm3(None, c.rm3_fb_terms, c.rm3_fb_docs, float(c.rm3_original_query_weight))
        old, self._searcher = self._searcher, searcher
        self._reader_version = self._commit_version()
        if old is not None:
            old.close()  # safe: every search holds the JNI lock, so none is in flight

    def _commit_version(self) -> int:
        # Reads only the segments_N file: cheaper than opening a reader for its version.
        j = self._j
        directory = j.FSDirectory.open(jpath(self.index_dir))
        try:
            return int(j.SegmentInfos.readLatestCommit(directory).getVersion())
        finally:
            directory.close()

    # -- searching -------------------------------------------------------------------------

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """BM25 top-``k`` per query; batches run on ``config.search_threads`` Java threads."""
        validate_queries(queries, k)
        self._check_open()
        texts = [self._prepare(q) for q in queries]
        if len(texts) == 1:
            return [self._search_one(texts[0], k)]
        return self._search_batch(texts, k)

    def _prepare(self, query: str) -> str:
        text = truncate_query(query, self.config.max_query_chars)
        if len(text) < len(query):
            log.warning("query of %d characters truncated to %d (max_query_chars)", len(query), len(text))
        return text

    @java_errors("BM25 search")
    def _search_one(self, text: str, k: int) -> list[Hit]:
        if self._fields is None:
            docs = self._searcher.search(text, k)
        else:
            docs = self._searcher.search_fields(text, self._fields, k)
        return self._hits(docs, k)

    @java_errors("BM25 batch search")
    def _search_batch(self, texts: list[str], k: int) -> list[list[Hit]]:
        j = self._j
        qids = [str(i) for i in range(len(texts))]
        jq, jids = j.ArrayList(), j.ArrayList()
        for q, i in zip(texts, qids):
            jq.add(q)
            jids.add(i)
        threads = self.config.search_threads
        if self._fields is None:
            out = self._searcher.batch_search(jq, jids, k, threads)
        else:
            out = self._searcher.batch_search_fields(jq, jids, k, threads, self._fields)
        return [self._hits(out.get(i), k) for i in qids]

    def _hits(self, docs: Any, k: int) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        for d in docs or []:
            item_id = d.docid
            if item_id not in seen:  # ids are unique by construction; cheap insurance
                seen.add(item_id)
                hits.append(Hit(item_id=item_id, score=float(d.score), source=self.name))
            if len(hits) == k:
                break
        return hits

    # -- stored fields ---------------------------------------------------------------------

    @java_errors("reading stored documents")
    def documents(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored fields (title, brand, category, ..., version) per id; unknown ids left out."""
        self._check_open()
        out: dict[str, dict[str, Any]] = {}
        for item_id in item_ids:
            raw = self._searcher.doc_raw(item_id)
            if raw is not None:
                out[item_id] = json.loads(raw)
        return out

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Stored title per id (for display); unknown ids are left out."""
        return {i: d.get("title", "") for i, d in self.documents(item_ids).items()}

    # -- live updates ----------------------------------------------------------------------

    @java_errors("BM25 upsert")
    def upsert(self, items: Iterable[Item]) -> int:
        """Add or replace items by ``item_id``; searchable and durable when this returns."""
        writer = self._require_writer()
        j = self._j
        n = 0
        for item in items:
            doc = self._doc_generator.createDocument(j.JsonDocument.fromString(to_json_line(item)))
            writer.updateDocument(j.Term("id", item.item_id), doc)
            n += 1
        if n:
            self._publish()
        return n

    @java_errors("BM25 delete")
    def delete(self, item_ids: Iterable[str]) -> int:
        """Delete items by id (unknown ids are ignored); returns how many ids were given."""
        writer = self._require_writer()
        j = self._j
        ids = list(item_ids)
        for item_id in ids:
            if not isinstance(item_id, str) or not item_id:
                raise InvalidInput("`item_ids` must be non-empty strings")
            # pyjnius resolves only the Query... overload of this varargs method.
            writer.deleteDocuments(j.TermQuery(j.Term("id", item_id)))
        if ids:
            self._publish()
        return len(ids)

    def _publish(self) -> None:
        if self._writer is None:
            raise RuntimeError("publish on a sparse index opened without a writer")
        self._writer.commit()
        self._open_searcher()

    @java_errors("refreshing the BM25 searcher")
    def refresh(self) -> bool:
        """Reopen the searcher if the index has a newer commit (another process wrote it);
        ``True`` when it did. The :class:`~tandem.retriever.Retriever` refresh capability."""
        self._check_open()
        if self._commit_version() == self._reader_version:
            return False
        self._open_searcher()
        return True

    # -- bookkeeping -----------------------------------------------------------------------

    @java_errors("reading index statistics")
    def stats(self) -> IndexStats:
        """Counts of the index as searches currently see it."""
        self._check_open()
        return IndexStats(index_dir=str(self.index_dir), version=self.version(), **index_counts(self.index_dir))

    def version(self) -> str:
        """Build id plus Lucene's commit version: changes with every visible update."""
        return f"{self.meta.index_id}.{self._reader_version}"

    def close(self) -> None:
        """Release the searcher, and the writer with its lock (pending work is committed)."""
        self._stop_following.set()

        def close_on_jvm() -> None:
            if self._closed:
                return
            self._closed = True
            if self._searcher is not None:
                self._searcher.close()
            if self._writer is not None:
                self._writer.close()

        on_jvm_thread(close_on_jvm)

    def __enter__(self) -> SparseRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("this SparseRetriever is closed")

    def _require_writer(self) -> Any:
        self._check_open()
        if self._writer is None:
            raise InvalidInput("this index was opened with `writable=False`; updates need a writable retriever")
        return self._writer
