"""Readers for query sets and relevance judgements (TREC formats) used by evaluation.

Queries come as TSV (``qid<TAB>text``) or SGML topics: TREC ``<top><num>…<title>…`` or the
CACM ``<DOC><DOCNO>…`` layout. Qrels are TREC ``qid iter docid grade``.
"""

from __future__ import annotations

import re
from pathlib import Path

from tandem.errors import InvalidInput

Qrels = dict[str, dict[str, int]]
"""qid → {item_id: grade}."""

_TREC_TOP = re.compile(r"<top>(.*?)</top>", re.S | re.I)
_TREC_NUM = re.compile(r"<num>\s*(?:Number:)?\s*(\S+)", re.I)
_TREC_TITLE = re.compile(r"<title>\s*(?:Topic:)?(.*?)(?=<desc>|<narr>|</top>|<title>)", re.S | re.I)
_CACM_DOC = re.compile(r"<DOC>\s*<DOCNO>\s*(\S+?)\s*</DOCNO>(.*?)</DOC>", re.S | re.I)


def _fold(text: str) -> str:
    return " ".join(text.split())


def read_queries(path: str | Path) -> dict[str, str]:
    """Read ``qid → text`` from a TSV file or TREC/CACM topics (detected from the content).

    Whitespace inside a query is folded; a blank or duplicate qid, or a line without a tab
    in a TSV file, raises :class:`InvalidInput` naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`queries` {str(p)!r} is not a file")
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("<"):
        return _read_topics(p, text)
    queries: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        qid, sep, query = line.partition("\t")
        qid = qid.strip()
        if not sep or not qid:
            raise InvalidInput(f"`queries` {p}:{lineno}: expected `qid<TAB>text`")
        if qid in queries:
            raise InvalidInput(f"`queries` {p}:{lineno}: duplicate qid {qid!r}")
        queries[qid] = _fold(query)
    return queries


def _read_topics(p: Path, text: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    tops = _TREC_TOP.findall(text)
    if tops:
        for block in tops:
            num, title = _TREC_NUM.search(block), _TREC_TITLE.search(block)
            if not num or not title:
                raise InvalidInput(f"`queries` {p}: a <top> block lacks <num> or <title>")
            queries[num.group(1)] = _fold(title.group(1))
        return queries
    docs = _CACM_DOC.findall(text)
    if not docs:
        raise InvalidInput(f"`queries` {p}: neither TSV nor TREC/CACM topics")
    for qid, body in docs:
        queries[qid] = _fold(body)
    return queries


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (``qid iter docid grade``) into ``qid → {docid: grade}``."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`qrels` {str(p)!r} is not a file")
    qrels: Qrels = {}
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise InvalidInput(f"`qrels` {p}:{lineno}: expected `qid iter docid grade`, got {len(parts)} columns")
            try:
                grade = int(parts[3])
            except ValueError:
                raise InvalidInput(f"`qrels` {p}:{lineno}: grade {parts[3]!r} is not an integer") from None
            qrels.setdefault(parts[0], {})[parts[2]] = grade
    return qrels


def write_queries(queries: dict[str, str], path: str | Path) -> None:
    """Write ``qid<TAB>text`` lines (the inverse of :func:`read_queries` for TSV)."""
    with open(path, "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(f"{qid}\t{_fold(text)}\n")
