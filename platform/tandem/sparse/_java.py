"""Lazy handles on the Lucene/Anserini classes Tandem uses, through Pyserini's bundled fatjar.

Importing this module does not start the JVM; :func:`java` does, once per process.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from tandem.errors import TandemError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Every Python → JVM call Tandem makes runs on this one thread, for two reasons:
#: - pyjnius binds a method to its target object on a shared descriptor (``JavaMethod.__get__``
#:   stores ``j_self``), so two Python threads calling the same method on different objects
#:   can swap targets — seen here as NullPointerExceptions and a JVM SIGSEGV under a pool;
#: - a thread attached to the JVM gets HotSpot's stack guard pages, and multi-threaded
#:   OpenBLAS/LAPACK work on such a thread then dies with SIGSEGV (seen here: scikit-learn's
#:   TruncatedSVD on the main thread after a BM25 search). Keeping the JVM off the caller's
#:   threads lets one process search Lucene and build semantic IDs or train.
#: Parallel work (batch search, bulk indexing) runs on Java threads started by one call.
_pool: ThreadPoolExecutor | None = None
_pool_thread: threading.Thread | None = None
_pool_lock = threading.Lock()


def _jvm_pool() -> tuple[ThreadPoolExecutor, threading.Thread]:
    global _pool, _pool_thread
    with _pool_lock:
        if _pool is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-jvm")
            _pool_thread = pool.submit(threading.current_thread).result()
            _pool = pool
    assert _pool_thread is not None  # set together with _pool (internal invariant, not input)
    return _pool, _pool_thread


def on_jvm_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the JVM thread (inline when already there); return its result."""
    pool, thread = _jvm_pool()
    if threading.current_thread() is thread:
        return fn(*args, **kwargs)
    return pool.submit(fn, *args, **kwargs).result()


_CLASSES = {
    "File": "java.io.File",
    "HashMap": "java.util.HashMap",
    "Float": "java.lang.Float",
    "FSDirectory": "org.apache.lucene.store.FSDirectory",
    "IndexWriter": "org.apache.lucene.index.IndexWriter",
    "IndexWriterConfig": "org.apache.lucene.index.IndexWriterConfig",
    "OpenMode": "org.apache.lucene.index.IndexWriterConfig$OpenMode",
    "Term": "org.apache.lucene.index.Term",
    "TermQuery": "org.apache.lucene.search.TermQuery",
    "BM25Similarity": "org.apache.lucene.search.similarities.BM25Similarity",
    "DirectoryReader": "org.apache.lucene.index.DirectoryReader",
    "SegmentInfos": "org.apache.lucene.index.SegmentInfos",
    "IndexReaderUtils": "io.anserini.index.IndexReaderUtils",
    "DefaultEnglishAnalyzer": "io.anserini.analysis.DefaultEnglishAnalyzer",
    "IndexCollection": "io.anserini.index.IndexCollection",
    "IndexCollectionArgs": "io.anserini.index.IndexCollection$Args",
    "DocumentGenerator": "io.anserini.index.generator.DefaultLuceneDocumentGenerator",
    "JsonDocument": "io.anserini.collection.JsonCollection$Document",
    "SimpleSearcher": "io.anserini.search.SimpleSearcher",
    "ArrayList": "java.util.ArrayList",
}


def java() -> SimpleNamespace:
    """Start the JVM (JDK found by :func:`tandem.jvm.ensure_jvm`) and return class handles.

    Use the handles only on the JVM thread (inside :func:`java_errors` functions).
    """
    return on_jvm_thread(_boot)


@functools.lru_cache(maxsize=1)
def _boot() -> SimpleNamespace:
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    # pyserini.pyclass puts the Anserini fatjar on the classpath; it is light, unlike
    # pyserini.search, which pulls in torch and transformers.
    import pyserini.pyclass  # noqa: F401
    from jnius import autoclass

    return SimpleNamespace(**{name: autoclass(cls) for name, cls in _CLASSES.items()})


def jpath(path: Any) -> Any:
    """A ``java.nio.file.Path`` for a Python path."""
    return java().File(str(path)).toPath()


def java_errors(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Turn a JVM exception escaping ``fn`` into a :class:`TandemError` naming ``what``.

    Callers never see a raw ``jnius.JavaException`` (a Java stack trace is not an error
    message); the Java class and message are kept in the text, the trace in the log.
    The call runs on the JVM thread (see :func:`on_jvm_thread`).
    """

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> T:
            java()  # jnius must not be imported before the classpath is set
            from jnius import JavaException

            try:
                return fn(*args, **kwargs)
            except JavaException as e:
                cls = getattr(e, "classname", None) or "java exception"
                msg = getattr(e, "innermessage", None) or str(e).splitlines()[0]
                trace = "\n".join(getattr(e, "stacktrace", None) or [])
                log.error("%s failed in the JVM: %s\n%s", what, cls, trace)
                raise TandemError(f"{what} failed in Lucene: {cls}: {msg}") from None

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> T:
            return on_jvm_thread(call, *args, **kwargs)

        return inner

    return wrap
