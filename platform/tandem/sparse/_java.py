"""Lazy handles on the Lucene/Anserini classes Tandem uses, through Pyserini's bundled fatjar.

Importing this module does not start the JVM; :func:`java` does, once per process.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from tandem.errors import TandemError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Serialises every Python → JVM call Tandem makes. pyjnius binds a method to its target
#: object on a shared descriptor (``JavaMethod.__get__`` stores ``j_self``), so two Python
#: threads calling the same method on different objects can swap targets — seen here as
#: NullPointerExceptions and a JVM SIGSEGV under a thread pool. Parallel work (batch
#: search, bulk indexing) therefore runs on Java threads, started by one locked call.
JNI_LOCK = threading.RLock()

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


@functools.lru_cache(maxsize=1)
def java() -> SimpleNamespace:
    """Start the JVM (JDK found by :func:`tandem.jvm.ensure_jvm`) and return class handles."""
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
    The call runs under :data:`JNI_LOCK`.
    """

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> T:
            with JNI_LOCK:
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

        return inner

    return wrap
