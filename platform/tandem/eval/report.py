"""Evaluation reports: JSON summary, per-query CSV and a PNG comparing systems."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tandem.eval.metrics import EvalResult, Significance, per_query_table


def write_report(
    path: str | Path,
    results: Mapping[str, EvalResult],
    significance: Mapping[str, Sequence[Significance]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the JSON report and return it.

    ``metrics`` holds the first system's figures (keyed by ir-measures names), ``systems``
    every system's; ``significance`` maps ``"A vs B"`` to per-measure paired tests.
    """
    first = next(iter(results))
    report: dict[str, Any] = {
        "system": first,
        "metrics": results[first].metrics,
        "queries": results[first].queries,
        "systems": {name: {"metrics": r.metrics, "queries": r.queries} for name, r in results.items()},
    }
    if significance:
        report["significance"] = {k: [asdict(s) for s in v] for k, v in significance.items()}
    if extra:
        report.update(extra)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=False), encoding="utf-8")
    return report


def write_per_query_csv(path: str | Path, results: Mapping[str, EvalResult]) -> None:
    """One row per (system, query) with every measure."""
    rows = per_query_table(results)
    if not rows:
        return
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_comparison(path: str | Path, results: Mapping[str, EvalResult], title: str = "") -> None:
    """Grouped bar chart: one group per measure, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = list(results)
    measures = list(results[systems[0]].metrics)
    x = np.arange(len(measures))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(measures) + 2), 4))
    for i, name in enumerate(systems):
        values = [results[name].metrics.get(m, 0.0) for m in measures]
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, measures, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title or "retrieval quality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
