"""The figures of an adapter run, typed once: what the checks measure, the gate judges and the registry stores.

Both adapter trainers (v1 T5, v2 tree) fill an :class:`AdapterMetrics` from their before /
after checks; the CLI, the pipeline's gate step and the registry read it back from the
summary's ``metrics`` with :meth:`AdapterMetrics.from_dict`. The flat ``as_dict`` keys
(``new_r10``, ``old_exact_match_before``, ``forgetting`` ...) are the stored format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tandem.errors import InvalidInput


@dataclass(frozen=True)
class AdapterMetrics:
    """New-item and old-item recall (R@``k`` on held-out pseudo-queries) and doc→id exact-match,
    before the adapter, at ID assignment (v2 only) and after training."""

    k: int
    new_recall: float
    new_recall_before: float
    new_exact_match: float
    new_exact_match_before: float
    new_recall_assigned: float | None = None
    """v2: right after the new items got IDs and embeddings, before any training."""
    new_exact_match_assigned: float | None = None
    old_recall: float | None = None
    """``None`` (all ``old_*``): no old items were checked."""
    old_recall_before: float | None = None
    old_exact_match: float | None = None
    old_exact_match_before: float | None = None

    @property
    def forgetting(self) -> float:
        """Old-item exact-match the adapter lost (0 without old items)."""
        if self.old_exact_match is None or self.old_exact_match_before is None:
            return 0.0
        return self.old_exact_match_before - self.old_exact_match

    @classmethod
    def from_checks(cls, k: int, before: Mapping[str, float], after: Mapping[str, float],
                    assigned: Mapping[str, float] | None = None) -> AdapterMetrics:
        """From check results keyed ``new_r{k}``, ``new_exact_match``, ``old_r{k}``, ``old_exact_match``;
        a new-item figure missing before is 0 (the base could not name those items)."""
        old = "old_exact_match" in after
        return cls(
            k=k, new_recall=after[f"new_r{k}"], new_recall_before=before.get(f"new_r{k}", 0.0),
            new_exact_match=after["new_exact_match"], new_exact_match_before=before.get("new_exact_match", 0.0),
            new_recall_assigned=assigned[f"new_r{k}"] if assigned is not None else None,
            new_exact_match_assigned=assigned["new_exact_match"] if assigned is not None else None,
            old_recall=after[f"old_r{k}"] if old else None, old_recall_before=before[f"old_r{k}"] if old else None,
            old_exact_match=after["old_exact_match"] if old else None,
            old_exact_match_before=before["old_exact_match"] if old else None)

    def as_dict(self) -> dict[str, float]:
        """The stored flat form (summary ``metrics``, adapter manifest, registry metrics)."""
        k = self.k
        out: dict[str, float] = {f"new_r{k}_before": self.new_recall_before}
        if self.new_recall_assigned is not None:
            out[f"new_r{k}_assigned"] = self.new_recall_assigned
        out[f"new_r{k}"] = self.new_recall
        out["new_exact_match_before"] = self.new_exact_match_before
        if self.new_exact_match_assigned is not None:
            out["new_exact_match_assigned"] = self.new_exact_match_assigned
        out["new_exact_match"] = self.new_exact_match
        if self.old_exact_match is not None and self.old_recall is not None:
            assert self.old_recall_before is not None and self.old_exact_match_before is not None
            out |= {f"old_r{k}_before": self.old_recall_before, f"old_r{k}": self.old_recall,
                    "old_exact_match_before": self.old_exact_match_before, "old_exact_match": self.old_exact_match,
                    "forgetting": self.forgetting, f"old_r{k}_drop": self.old_recall_before - self.old_recall}
        return out

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Any], k: int) -> AdapterMetrics:
        """Read the stored flat form back; :class:`InvalidInput` naming the missing key."""
        def get(key: str, required: bool = False) -> float | None:
            if key in metrics:
                return float(metrics[key])
            if required:
                raise InvalidInput(f"adapter metrics lack `{key}` (written by another version?)")
            return None

        return cls(k=k, new_recall=get(f"new_r{k}", True) or 0.0, new_recall_before=get(f"new_r{k}_before") or 0.0,
                   new_exact_match=get("new_exact_match", True) or 0.0,
                   new_exact_match_before=get("new_exact_match_before") or 0.0,
                   new_recall_assigned=get(f"new_r{k}_assigned"),
                   new_exact_match_assigned=get("new_exact_match_assigned"),
                   old_recall=get(f"old_r{k}"), old_recall_before=get(f"old_r{k}_before"),
                   old_exact_match=get("old_exact_match"), old_exact_match_before=get("old_exact_match_before"))

    def rows(self) -> list[tuple[str, float, float]]:
        """(label, before, after) of each check that ran, for the CLI's table."""
        k = self.k
        rows = [(f"new-item R@{k} (held-out pseudo-query)", self.new_recall_before, self.new_recall),
                ("new-item doc→id exact-match", self.new_exact_match_before, self.new_exact_match)]
        if self.old_recall is not None and self.old_recall_before is not None:
            rows.append((f"old-item R@{k} (held-out pseudo-query)", self.old_recall_before, self.old_recall))
        if self.old_exact_match is not None and self.old_exact_match_before is not None:
            rows.append(("old-item doc→id exact-match", self.old_exact_match_before, self.old_exact_match))
        return rows
