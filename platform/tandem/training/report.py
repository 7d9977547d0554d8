"""What a training run leaves for people: a JSON summary and a training-curve PNG."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

SUMMARY_FILE = "training_summary.json"
CURVE_FILE = "training_curve.png"


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``training_summary.json`` next to the model."""
    path = Path(out) / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return path


def write_curve(out: Path, steps: Sequence[Sequence[float]], epochs: Sequence[dict[str, Any]],
                stages: Sequence[str], shaded: Collection[str] = ()) -> Path:
    """Loss per step (coloured by stage) and memorisation exact/prefix-match per epoch; epochs
    of the ``shaded`` stages (alignment) get a grey band."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
    for s, name in enumerate(stages):
        pts = [(x, y) for x, st, y in steps if int(st) == s]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax_loss.plot(xs, ys, label=name, linewidth=1, marker="o" if len(xs) < 5 else None)
    ax_loss.set(xlabel="step (within stage)", ylabel="training loss", yscale="log", title="Loss")
    ax_loss.legend()
    mem = [(i + 1, r) for i, r in enumerate(epochs) if "memorisation" in r]
    if mem:
        mem_xs = [x for x, _ in mem]
        ax_mem.plot(mem_xs, [r["memorisation"]["exact_match"] for _, r in mem], marker="o", label="exact-match")
        ax_mem.plot(mem_xs, [r["memorisation"]["mean_prefix_match"] for _, r in mem], marker=".",
                    label="prefix-match (mean share)")
        for x, r in mem:
            if r["stage"] in shaded:
                ax_mem.axvspan(x - 0.5, x + 0.5, color="grey", alpha=0.1, linewidth=0)
    ax_mem.axhline(0.9, color="red", linestyle=":", linewidth=1, label="target 0.9")
    ax_mem.set(xlabel="epoch (all stages; shaded = alignment)", ylabel="doc→id rate", ylim=(0, 1.02),
               title="Memorisation")
    ax_mem.legend(loc="lower right")
    fig.tight_layout()
    path = Path(out) / CURVE_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
