"""Pyserini indexes and searches a three-document corpus on the JVM that setup chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.jvm import MIN_JAVA, JavaHome

pytestmark = pytest.mark.integration

DOCS = [
    {"id": "d1", "contents": "cordless drill with two lithium batteries and a charger"},
    {"id": "d2", "contents": "white interior latex paint, one gallon, eggshell finish"},
    {"id": "d3", "contents": "galvanized steel deck screws, box of 500"},
]

# Indexing runs in a child process (Anserini's IndexCollection.main may call System.exit),
# configured by ensure_jvm() exactly as the parent is.
_INDEX = (
    "import runpy, sys; from tandem.jvm import ensure_jvm; ensure_jvm(); "
    "runpy.run_module('pyserini.index.lucene', run_name='__main__')"
)


@pytest.mark.timeout(300)
def test_lucene_index_and_search_three_documents(java_home: JavaHome, tmp_path: Path) -> None:
    assert java_home.major >= MIN_JAVA
    assert os.environ["JAVA_HOME"] == str(java_home.path)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    index = tmp_path / "index"
    run = subprocess.run(
        [sys.executable, "-c", _INDEX,
         "--collection", "JsonCollection", "--input", str(corpus), "--index", str(index),
         "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    try:
        assert searcher.num_docs == 3
        hits = searcher.search("lithium drill batteries", k=3)
        assert [h.docid for h in hits][:1] == ["d1"]
        assert hits[0].score > 0
        assert [h.docid for h in searcher.search("deck screws", k=3)][:1] == ["d3"]
        assert searcher.search("zeppelin", k=3) == []
        assert json.loads(searcher.doc("d2").raw())["contents"] == DOCS[1]["contents"]
    finally:
        searcher.close()


# Python's SIGTERM handler is installed first and the JVM started after it, as in the ingest
# consumer (its index starts the JVM at the first write): the handler must still get the signal.
_SIGTERM_AFTER_JVM = """
import os, signal, sys, time
from tandem.jvm import ensure_jvm
ensure_jvm()
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(1))
import jnius
jnius.autoclass("java.lang.String")
os.kill(os.getpid(), signal.SIGTERM)
deadline = time.monotonic() + 10
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(0 if got else 3)
"""


@pytest.mark.timeout(120)
def test_sigterm_stays_with_python_after_the_jvm_starts(java_home: JavaHome) -> None:
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_AFTER_JVM], capture_output=True, text=True, timeout=100)
    # 143: the JVM's own handler took SIGTERM and exited (no -Xrs); 3: no handler ran.
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
