"""One failed-query cycle: group, diagnose, write corrective samples, corrections and a report.

Input: the failed-query records of a period (``tandem.failed-queries`` or its JSONL copy)
and the feedback events of the same period (for the later clicks of each user). Output, in
one folder:

- ``samples.jsonl``: corrective training samples ``{"query", "item_ids", "kind", "via"}``
  for the hourly adapter — a misspelt query → the items its corrected query retrieves (when a
  ``search`` function is given), a vocabulary-gap query → the items its users clicked later
  in the session; the adapter mixes them with replayed old examples like any new pairs;
- ``corrections.json``: ``{failed query: corrected query}`` (served by :class:`Corrections`);
- ``report.json``: every group with its count, reasons, diagnosis and action, most frequent
  first (``tandem failed report`` prints it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.failed.diagnose import Diagnosis, Vocabulary, diagnose, words
from tandem.failed.events import FailedQuery
from tandem.feedback.events import FeedbackEvent

SESSION_S = 1800.0
"""A click counts for a failed query when the same user made it within this many seconds after."""
MAX_GROUPS = 10_000
"""Most distinct failed queries one cycle diagnoses (the most frequent)."""
REPORT_FORMAT = "tandem.failed.report/1"


def normalise(query: str) -> str:
    """The grouping key of a query: its lower-case words."""
    return " ".join(words(query))


def later_clicks(failures: Sequence[FailedQuery], feedback: Iterable[FeedbackEvent],
                 session_s: float = SESSION_S) -> dict[str, Counter[str]]:
    """Per normalised query: items its users clicked/bought within ``session_s`` after failing."""
    by_user: dict[str, list[FeedbackEvent]] = defaultdict(list)
    for e in feedback:
        if e.kind in ("click", "purchase") and e.user_id:
            by_user[e.user_id].append(e)
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for f in failures:
        if not f.user_id:
            continue
        for e in by_user.get(f.user_id, ()):
            if f.ts <= e.ts <= f.ts + session_s and e.request_id != f.request_id:
                out[normalise(f.query)][e.item_id] += 2 if e.kind == "purchase" else 1
    return out


def run_cycle(failures: Iterable[FailedQuery], vocab: Vocabulary, out: str | Path, *,
              feedback: Iterable[FeedbackEvent] = (), search: Callable[[str], Sequence[str]] | None = None,
              targets: int = 5, min_count: int = 1, session_s: float = SESSION_S) -> dict[str, Any]:
    """Run the cycle (module docstring) into folder ``out``; returns the report."""
    if targets < 1:
        raise InvalidInput(f"`targets` must be >= 1, got {targets}")
    fails = list(failures)
    groups: dict[str, list[FailedQuery]] = defaultdict(list)
    for f in fails:
        key = normalise(f.query)
        if key:
            groups[key].append(f)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ranked = [(k, v) for k, v in ranked if len(v) >= min_count][:MAX_GROUPS]
    clicks = later_clicks(fails, feedback, session_s)
    diagnoses: list[Diagnosis] = []
    samples: list[dict[str, Any]] = []
    corrections: dict[str, str] = {}
    for key, members in ranked:
        clicked = [i for i, _ in clicks.get(key, Counter()).most_common(targets)]
        d = diagnose(key, vocab, count=len(members), reasons=Counter(m.reason for m in members), clicked=clicked)
        diagnoses.append(d)
        if d.kind == "misspelling":
            corrections[key] = d.correction
            if search is not None:
                found = list(search(d.correction))[:targets]
                if found:
                    samples.append({"query": key, "item_ids": found, "kind": d.kind, "via": d.correction})
        if d.clicked:
            samples.append({"query": key, "item_ids": d.clicked, "kind": "vocabulary_gap" if d.kind != "misspelling"
                            else "later_click", "via": "session clicks"})
    report = {"format": REPORT_FORMAT, "failures": len(fails), "groups": len(groups), "diagnosed": len(diagnoses),
              "kinds": dict(Counter(d.kind for d in diagnoses)), "samples": len(samples),
              "corrections": len(corrections),
              "top": [{**asdict(d), "action": d.action()} for d in diagnoses]}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    _write(folder / "corrections.json", json.dumps(corrections, indent=1, sort_keys=True))
    _write(folder / "report.json", json.dumps(report, indent=1))
    return report


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_report(folder: str | Path) -> dict[str, Any]:
    """The ``report.json`` of a cycle folder; :class:`InvalidInput` when absent."""
    p = Path(folder) / "report.json"
    if not p.is_file():
        raise InvalidInput(f"`{folder}` holds no report.json (run the failed-query step first)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CorruptArtifact(f"{p} is not JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != REPORT_FORMAT:
        raise CorruptArtifact(f"{p} is not a {REPORT_FORMAT} report")
    return d


def corrective_pairs(folder: str | Path, per_query: int = 3) -> list[tuple[str, str]]:
    """(query, item id) pairs of a cycle's ``samples.jsonl``: the first ``per_query`` targets of
    each sample, what the hourly adapter takes as ``extra_pairs``; :class:`InvalidInput` when
    absent, :class:`CorruptArtifact` naming the line that is malformed."""
    if per_query < 1:
        raise InvalidInput(f"`per_query` must be >= 1, got {per_query}")
    p = Path(folder) / "samples.jsonl"
    if not p.is_file():
        raise InvalidInput(f"`{folder}` holds no samples.jsonl (run the failed-query step first)")
    out: list[tuple[str, str]] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            query, items = d["query"], d["item_ids"]
            if not isinstance(query, str) or not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise TypeError("`query` must be a string and `item_ids` a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifact(f"{p}:{n}: not a corrective sample ({exc})"[:300]) from None
        out.extend((query, i) for i in items[:per_query])
    return out


class Corrections:
    """The corrections a cycle learnt, applied to incoming queries (exact normalised match)."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = dict(table)

    @classmethod
    def load(cls, folder: str | Path) -> Corrections:
        """``corrections.json`` of a cycle folder."""
        p = Path(folder) / "corrections.json"
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"`{folder}` holds no corrections.json") from None
        except ValueError as exc:
            raise CorruptArtifact(f"{p} is not JSON: {exc}") from None
        if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
            raise CorruptArtifact(f"{p} must map query strings to query strings")
        return cls(d)

    def rewrite(self, query: str) -> str:
        """The corrected query, or ``query`` itself when no correction was learnt for it."""
        return self.table.get(normalise(query), query)
