"""Document-poisoning defence at ingest: detect keyword-stuffed items and act on them.

Section 5.4.1 of the seed chapter names *document poisoning*: a document edited to win
queries it does not answer, e.g. a real description followed by ``[hidden keywords: ...]``.
In a product catalog the same attack is keyword stuffing by a seller. Lexical retrieval is
the exposed part: BM25's term-frequency factor rewards repetition (saturating, but a title
that says "drill" seven times still beats one that says it once), and any appended term
makes the item match queries it has nothing to do with.

**What is flagged** (rules; each threshold is a field of :class:`PoisoningPolicy`):

``repetition``
    A *content term* occurs more often in one field than real items ever do. Content terms
    are lower-cased alphanumeric tokens minus function words, measurement units and digits:
    real titles repeat "in." and "x" ("24 in. x 1/2 in. x 12 in.") but almost never a noun.
    Measured on the 54,667 Home Depot titles: no content term occurs more than 3 times in a
    title (156 titles reach 3), hence ``title`` max 3. Descriptions are longer, so 8.
``term_share``
    In a field with at least ``min_share_tokens`` content tokens, one term makes up more
    than ``max_term_share`` of them (stuffing spread over a long text).
``keyword_list``
    A run of at least ``max_list_run`` consecutive content tokens with no function word in
    between, in a description or attribute value — English prose has a function word every
    few words, so a long run is a list of keywords, not a sentence ("hidden keywords"). Of
    that run, at least ``min_unrelated_share`` must be terms absent from the item's title,
    brand and category ("unrelated" to what the item is), so an honest spec list that
    repeats the title's vocabulary is not flagged. Titles are noun phrases without function
    words by nature, so for them the signal is length: more than ``max_title_terms``
    content terms (Home Depot's longest title has 24).

**What happens** (``action``):

``quarantine`` (default)
    Stored with a quarantine record (id, version, rules) and not indexed (removed from the
    index if an earlier version was there) until a clean version arrives. The seller's data
    is kept for review — nothing is lost — while the item cannot win any query.
``flag``
    The item is stored and indexed, but the index sees a *neutralised* copy: the flagged
    fields capped at one occurrence per term (every other field at ``term_cap``,
    :func:`tandem.sparse.documents.cap_item`) and detected keyword-list runs removed.
``dlq``
    Refused at the consumer: sent to the dead-letter topic with reason ``poisoning:<rule>``
    (or to the ``--rejects`` file for the JSONL source) and never stored.
``off``
    No detection (term caps still apply when ``term_cap`` is set).

Why quarantine is the default, measured by ``bench.poisoning`` on Home Depot: BM25's gain
from stuffing comes mostly from the *presence* of the query's terms, not their count — a
copy with the query appended once already ranks first — so capping repeats leaves a
repetition-stuffed item at rank 1, and only keeping flagged items out of the index removes
the gain; dropping a hidden keyword list (``flag``) does work. The price of quarantine is a
false positive delisting a real product until reviewed: the detector flagged none of the
54,667 real Home Depot titles, and a catalog where it does can switch to ``flag``.
Term caps alone (every item, cap 3) change no rank there either; they stay on because they
cost nothing and bound what an undetected repeat can add.

Every flagged item increments ``tandem_ingest_poisoning_flagged_total{rule, action}``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field

from tandem.catalog.item import Item

FLAGGED = PromCounter(
    "tandem_ingest_poisoning_flagged", "Items the poisoning detector flagged at ingest, by rule and action.",
    ["rule", "action"],
)  # fmt: skip

PoisoningAction = Literal["quarantine", "flag", "dlq", "off"]

_TOKEN = re.compile(r"[0-9a-z]+")

#: English function words: their absence over a long stretch is what marks a keyword list.
FUNCTION_WORDS = frozenset(
    "a about above after again against all also an and any are as at be because been before being below between "
    "both but by can could did do does doing down during each few for from further had has have having he her here "
    "hers him his how i if in into is it its itself just may me might more most must my no nor not now of off on "
    "once only or other our ours out over own same she should so some such than that the their theirs them then "
    "there these they this those through to too under until up upon very via was we were what when where which "
    "while who whom why will with within without would you your yours".split()
)
#: Measurement units and size letters that real product titles legitimately repeat.
UNITS = frozenset(
    "in ft yd mm cm m lb lbs oz gal qt pt sq cu mil amp amps v volt volts watt watts w h d l btu gpf gpm psi pc pcs "
    "piece pieces pack count ct x no dia thk".split()
)


def tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (close to what Lucene's standard analyzer sees)."""
    return _TOKEN.findall(text.lower())


def is_content(token: str) -> bool:
    """Whether ``token`` carries topical meaning: not a function word, unit, digit run or single letter."""
    return len(token) > 1 and not token.isdigit() and token not in FUNCTION_WORDS and token not in UNITS


class PoisoningPolicy(BaseModel):
    """Thresholds of the detector and what to do with flagged items (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: PoisoningAction = "quarantine"
    """``quarantine`` (store, do not index), ``flag`` (index a neutralised copy), ``dlq`` (refuse), ``off``."""
    term_cap: int | None = Field(default=3, ge=1)
    """Per-field cap on any term's occurrences in the text sent to Lucene (all items); ``None`` = no cap."""
    max_term_count: dict[str, int] = Field(default_factory=lambda: {"title": 3, "description": 8, "attributes": 4})
    """Most occurrences of one content term per field before ``repetition`` fires."""
    max_term_share: float = Field(default=0.3, gt=0, le=1)
    """Largest share one content term may have of a field's content tokens (``term_share``)."""
    min_share_tokens: int = Field(default=10, ge=2)
    """``term_share`` only judges fields with at least this many content tokens."""
    max_list_run: int = Field(default=12, ge=3)
    """Longest run of content tokens without a function word in a description/attribute (``keyword_list``)."""
    min_unrelated_share: float = Field(default=0.5, ge=0, le=1)
    """Share of a run's terms absent from title/brand/category needed to call it a hidden keyword list."""
    max_title_terms: int = Field(default=24, ge=5)
    """Most content terms a title may have before ``keyword_list`` fires on it."""


@dataclass(frozen=True)
class Finding:
    """One rule that fired: which, on which field, and a short human-readable detail."""

    rule: str
    field: str
    detail: str


@dataclass
class Verdict:
    """What the detector found in one item; ``spans`` are keyword-list runs to drop per field."""

    findings: list[Finding] = field(default_factory=list)
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """Whether any rule fired."""
        return bool(self.findings)

    @property
    def rules(self) -> list[str]:
        """Distinct rules that fired, in the order found."""
        return list(dict.fromkeys(f.rule for f in self.findings))

    @property
    def reason(self) -> str:
        """``poisoning:<first rule>`` — the dead-letter reason."""
        return f"poisoning:{self.rules[0]}" if self.findings else ""

    def describe(self) -> str:
        """All findings in one line, for logs and DLQ error headers."""
        return "; ".join(f"{f.rule} in `{f.field}`: {f.detail}" for f in self.findings)


class PoisoningDetector:
    """Applies :class:`PoisoningPolicy`'s rules to items. Stateless and thread-safe."""

    def __init__(self, policy: PoisoningPolicy | None = None) -> None:
        self.policy = policy or PoisoningPolicy()

    def fields(self, item: Item) -> dict[str, str]:
        """The free-text fields a seller controls, by name (attributes joined as ``k v; ...``)."""
        out = {"title": item.title}
        if item.description:
            out["description"] = item.description
        if item.attributes:
            out["attributes"] = "; ".join(f"{k} {v}" for k, v in item.attributes.items())
        return out

    def inspect(self, item: Item) -> Verdict:
        """Run every rule over ``item``'s fields."""
        p = self.policy
        verdict = Verdict()
        if p.action == "off":
            return verdict
        identity = {t for t in tokens(" ".join([item.title, item.brand or "", *item.category])) if is_content(t)}
        for name, text in self.fields(item).items():
            toks = tokens(text)
            content = [t for t in toks if is_content(t)]
            if not content:
                continue
            counts = Counter(content)
            term, top = counts.most_common(1)[0]
            limit = p.max_term_count.get(name)
            if limit is not None and top > limit:
                verdict.findings.append(Finding("repetition", name, f"{term!r} x{top} (max {limit})"))
            elif len(content) >= p.min_share_tokens and top / len(content) > p.max_term_share:
                verdict.findings.append(
                    Finding("term_share", name, f"{term!r} is {top / len(content):.0%} of {len(content)} terms")
                )
            if name == "title":
                if len(content) > p.max_title_terms:
                    verdict.findings.append(
                        Finding("keyword_list", name, f"{len(content)} terms (max {p.max_title_terms})")
                    )
                continue
            for start, end, run in _content_runs(toks, p.max_list_run):
                unrelated = sum(t not in identity for t in run) / len(run)
                if unrelated >= p.min_unrelated_share:
                    verdict.findings.append(
                        Finding("keyword_list", name, f"{len(run)} terms without a function word, "
                                f"{unrelated:.0%} unrelated to the title")  # fmt: skip
                    )
                    verdict.spans.setdefault(name, []).append((start, end))
        return verdict

    def neutralise(self, item: Item, verdict: Verdict | None = None) -> Item:
        """The copy the index sees: keyword-list runs removed, every field capped at ``term_cap``."""
        from tandem.sparse.documents import cap_item

        verdict = verdict if verdict is not None else self.inspect(item)
        update: dict[str, object] = {}
        if "description" in verdict.spans and item.description:
            update["description"] = _drop_token_spans(item.description, verdict.spans["description"]) or None
        if "attributes" in verdict.spans and item.attributes:
            # Attribute runs were found on the joined text; judge each value on its own instead.
            update["attributes"] = {
                k: v for k, v in item.attributes.items() if not _content_runs(tokens(f"{k} {v}"), self.policy.max_list_run)
            }
        # Every repeat in a field flagged for repetition is stuffing: keep one of each term there.
        stuffed = {f.field for f in verdict.findings if f.rule in ("repetition", "term_share")}
        if "title" in stuffed:
            update["title"] = cap_item(item, 1).title
        if "description" in stuffed and item.description:
            update["description"] = cap_item(item.model_copy(update={"description": update.get(
                "description", item.description)}), 1).description
        if "attributes" in stuffed and item.attributes:
            update["attributes"] = cap_item(item.model_copy(update={"attributes": update.get(
                "attributes", item.attributes)}), 1).attributes
        cleaned = item.model_copy(update=update) if update else item
        return cap_item(cleaned, self.policy.term_cap) if self.policy.term_cap else cleaned


def _content_runs(toks: list[str], min_run: int) -> list[tuple[int, int, list[str]]]:
    """Runs of >= ``min_run`` content tokens not broken by a function word: (start, end, terms).

    ``start``/``end`` index ``toks`` (end exclusive); digits and units inside a run neither
    break it nor count towards its length.
    """
    runs: list[tuple[int, int, list[str]]] = []
    start = 0
    run: list[str] = []
    for i, t in enumerate([*toks, "the"]):  # a sentinel function word closes the last run
        if t in FUNCTION_WORDS:
            if len(run) >= min_run:
                runs.append((start, i, run))
            start, run = i + 1, []
        elif is_content(t):
            run.append(t)
    return runs


def _drop_token_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without the characters covered by token spans (indices into :func:`tokens`)."""
    matches = list(_TOKEN.finditer(text.lower()))
    cut: list[tuple[int, int]] = []
    for s, e in spans:
        if s < len(matches) and e > s:
            cut.append((matches[s].start(), matches[min(e, len(matches)) - 1].end()))
    out, pos = [], 0
    for a, b in sorted(cut):
        out.append(text[pos:a])
        pos = b
    out.append(text[pos:])
    return re.sub(r"\s{2,}", " ", "".join(out)).strip(" ,;:[]()")


def count_flag(verdict: Verdict, action: str) -> None:
    """Count a flagged item in ``tandem_ingest_poisoning_flagged_total`` (once per rule that fired)."""
    for rule in verdict.rules:
        FLAGGED.labels(rule, action).inc()


class QuarantineLog:
    """Quarantined items: ``(item_id, version, reason, detail)`` in a table beside the catalog store.

    Lives in the store's SQLite file (its own table and connection, so the store's schema is
    untouched); ``:memory:`` stores get an in-memory table. An item leaves quarantine when a
    later version is indexed clean, or is deleted.
    """

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS quarantine (item_id TEXT PRIMARY KEY, version INTEGER NOT NULL, "
        "reason TEXT NOT NULL, detail TEXT NOT NULL)"
    )

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute(self._SCHEMA)
        self._mu = threading.Lock()

    def add(self, item: Item, verdict: Verdict) -> None:
        """Record (or refresh) the quarantine of ``item`` at its version."""
        with self._mu:
            self._db.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?,?,?,?)",
                (item.item_id, item.version, verdict.reason, verdict.describe()[:2000]),
            )

    def release(self, item_ids: Iterable[str]) -> None:
        """Forget the quarantine of ``item_ids`` (a clean version or a delete arrived)."""
        ids = [(i,) for i in item_ids]
        if ids:
            with self._mu:
                self._db.executemany("DELETE FROM quarantine WHERE item_id=?", ids)

    def entries(self) -> dict[str, tuple[int, str]]:
        """``item_id → (version, reason)`` of every quarantined item."""
        with self._mu:
            return {r[0]: (r[1], r[2]) for r in self._db.execute("SELECT item_id, version, reason FROM quarantine")}

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
