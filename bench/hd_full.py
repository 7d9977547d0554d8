"""Full-profile Home Depot runs of the generative retriever, several at once on one machine.

BENCHMARK.md's full profile — Home Depot minus its fresh split, train queries for training,
dev for reporting — for the figures issues 5, 6 and 9 ask of a full run: every ablation row
of :mod:`bench.strategies` trained with ``tandem train generative --profile full`` under the
same wall-clock budget, each evaluated on dev with ``tandem eval --system generative`` (typo
RobustScore included), and the hourly adapter (:mod:`bench.adapter` ``--hd-base``) trained on
the fresh items over the default recipe's base. Rows run as parallel processes: on a GPU a
model this size is bound by kernel launches, not arithmetic, so one card trains several.

Two steps, because the second may run where there is no Java (a GPU machine):

``python -m bench.hd_full --prepare DIR`` (CPU, Pyserini) writes into ``DIR``: a copy of the
Home Depot files (``data/homedepot``), ``base.jsonl`` (the catalog minus the fresh items),
``ids/`` (the full-profile semantic IDs of the base, built once for every row) and
``prepared/`` (a BM25 run of the train queries: the hard negatives' source).

``python -m bench.hd_full --from DIR --work W --out FILE.json [--rows ...] [--budget-minutes M]``
trains, evaluates and writes ``{"figures": {...}}`` plus a table; ``W`` keeps every model,
log, summary and report. ``--deadline-minutes`` ends whatever still runs by then (its row is
reported as killed), so the script always writes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.strategies import BASE, ROWS

#: The row whose recipe is the profiles' default (``DEFAULT_RECIPE``): the adapter's base.
DEFAULT_ROW = "+pseudo"
HD_FILES = ("products.jsonl", "queries.train.tsv", "qrels.train.txt", "queries.dev.tsv", "qrels.dev.txt")
MEASURES = ("nDCG@10", "R(rel=4)@10", "R(rel=4)@100", "RR(rel=4)@10")


def prepare(out: Path, seed: int) -> None:
    """Write the data every row shares (see the module doc); needs Java for the BM25 run."""
    from tandem.catalog import read_qrels, read_queries
    from tandem.catalog.datasets import data_root, is_fresh
    from tandem.catalog.loaders import load_items
    from tandem.ids import build_semantic_ids
    from tandem.training.config import id_config
    from tandem.training.data import training_pairs
    from tandem.training.prepare import prepare_training_data

    root = data_root("homedepot")
    data = out / "data" / "homedepot"
    data.mkdir(parents=True, exist_ok=True)
    for name in HD_FILES:
        shutil.copyfile(root / name, data / name)
    lines = (root / "products.jsonl").read_text(encoding="utf-8").splitlines()
    base_lines = [ln for ln in lines if ln.strip() and not is_fresh(str(json.loads(ln)["item_id"]))]
    (out / "base.jsonl").write_text("\n".join(base_lines) + "\n", encoding="utf-8")
    items = load_items(out / "base.jsonl").items
    t0 = time.perf_counter()
    id_map = build_semantic_ids(items, id_config("full").model_copy(update={"seed": seed}))
    id_map.save(str(out / "ids"))
    print(f"base catalog: {len(items)} of {len(lines)} items; semantic IDs in {time.perf_counter() - t0:.0f} s")
    pairs, _ = training_pairs(read_queries(root / "queries.train.tsv"), read_qrels(root / "qrels.train.txt"),
                              set(id_map.item_ids()), 4)
    t0 = time.perf_counter()
    summary = prepare_training_data(items, sorted({q for q, _ in pairs}), 0, seed, out / "prepared")
    print(f"BM25 run of {summary['bm25_queries']} train queries in {time.perf_counter() - t0:.0f} s")


def _tandem(*args: str) -> list[str]:
    return [sys.executable, "-m", "tandem_app.cli", *args]


def _row_dir(work: Path, name: str) -> Path:
    """A row's model folder (nothing else goes in: the artifact's manifest checksums it)."""
    return work / "models" / name.strip("+")


def _log(work: Path, name: str, what: str) -> Path:
    return work / "logs" / f"{name.strip('+')}.{what}.log"


def _eval(work: Path, name: str) -> Path:
    return work / "evals" / f"{name.strip('+')}.json"


class Job:
    """One subprocess with its log, start time and end."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.name, self.log, self.started = name, log, time.perf_counter()
        self._fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in poll() once the job ends
        self._fh.write(" ".join(cmd) + "\n")
        self._fh.flush()
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env)
        self.seconds: float | None = None
        self.rc: int | None = None

    def poll(self) -> bool:
        """Whether the job has ended (records its exit status and wall time once)."""
        if self.rc is None and self.proc.poll() is not None:
            self.rc, self.seconds = self.proc.returncode, round(time.perf_counter() - self.started, 1)
            self._fh.close()
        return self.rc is not None

    def kill(self) -> None:
        """SIGKILL a job still running (its ``rc`` becomes -9)."""
        if not self.poll():
            self.proc.kill()
            self.proc.wait()
            self.poll()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train every row in parallel, evaluate each as it ends, train the adapter; collect figures."""
    src, work = args.from_dir.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    hd = src / "data" / "homedepot"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TANDEM_DATA": str(src / "data")}
    deadline = time.perf_counter() + args.deadline_minutes * 60
    rows = args.rows or list(ROWS)
    pending = set(rows)  # rows whose training has not ended yet
    jobs: dict[str, Job] = {}
    for name in rows:
        sets = {**BASE, **ROWS[name], "time_budget_minutes": args.budget_minutes, "threads": 1,
                "memorise_max_epochs": args.memorise_max_epochs}
        cmd = _tandem("train", "generative", "--profile", "full", "--catalog", str(src / "base.jsonl"),
                      "--train-queries", str(hd / "queries.train.tsv"), "--train-qrels", str(hd / "qrels.train.txt"),
                      "--ids", str(src / "ids"), "--out", str(_row_dir(work, name)), "--seed", str(args.seed),
                      "--no-progress", *(a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")))
        if ROWS[name].get("hard_negatives"):
            cmd += ["--prepared", str(src / "prepared")]
        jobs[f"train {name}"] = Job(f"train {name}", cmd, _log(work, name, "train"), env)
    while True:
        for key, job in list(jobs.items()):
            if not job.poll() or not key.startswith("train "):
                continue
            name = key.removeprefix("train ")
            if name in pending:
                pending.discard(name)
                out = _row_dir(work, name)
                if not (out / "manifest.json").is_file():  # no model was saved: nothing to evaluate
                    continue
                jobs[f"eval {name}"] = Job(f"eval {name}", _tandem(
                    "eval", "--system", "generative", "--model", str(out), "--catalog", str(src / "base.jsonl"),
                    "--queries", str(hd / "queries.dev.tsv"), "--qrels", str(hd / "qrels.dev.txt"), "--k", "100",
                    "--robustness", "--suite", "typo", "--seed", str(args.seed), "--out", str(_eval(work, name))),
                    _log(work, name, "eval"), env)
                if name == args.adapter_row:
                    jobs["adapter"] = Job("adapter", [
                        sys.executable, "-m", "bench.adapter", "--hd-base", str(out), "--out",
                        str(work / "adapter.json"), "--adapter-out", str(work / "adapter"), "--seed", str(args.seed),
                        *(["--epochs", str(args.adapter_epochs)] if args.adapter_epochs else [])],
                        work / "logs" / "adapter.log", env)
        if all(j.poll() for j in jobs.values()):
            break
        if time.perf_counter() > deadline:
            for job in jobs.values():
                job.kill()
            break
        time.sleep(2)
    return collect(work, rows, jobs, args)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def collect(work: Path, rows: list[str], jobs: dict[str, Job], args: argparse.Namespace) -> dict[str, Any]:
    """Figures per row from each run's training summary and eval report, plus the adapter's."""
    import torch

    figures: dict[str, Any] = {
        "profile": "full", "budget_minutes": args.budget_minutes, "parallel_rows": len(rows), "seed": args.seed,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "jobs": {k: {"rc": j.rc, "seconds": j.seconds} for k, j in jobs.items()}, "rows": {}}
    for name in rows:
        out = _row_dir(work, name)
        row: dict[str, Any] = {"train_rc": jobs[f"train {name}"].rc, "train_wall_s": jobs[f"train {name}"].seconds}
        summary = _read(out / "training_summary.json")
        if summary:
            mem = summary.get("final_memorisation", {})
            peft = summary.get("strategies", {}).get("align_peft")
            row.update(exact_match=mem.get("exact_match"), prefix_match=mem.get("prefix_match"),
                       mean_prefix_match=mem.get("mean_prefix_match"),
                       train_seconds=summary.get("train_seconds"),
                       stage3_trainable_params=peft["trainable"] if peft else summary.get("parameters"),
                       peak_rss_mb=summary.get("peak_rss_mb"), peak_gpu_mb=summary.get("peak_gpu_mb"),
                       samples_per_s=summary.get("samples_per_s"),
                       stages={n: {k: s.get(k) for k in ("epochs", "seconds", "stop_reason")}
                               for n, s in summary.get("stages", {}).items()})
        report = _read(_eval(work, name))
        if report:
            metrics = report["systems"]["generative"]["metrics"]
            row.update({f"dev_{m}": round(metrics[m], 4) for m in MEASURES if m in metrics})
            robust = report.get("robustness", {}).get("systems", {}).get("generative", {})
            row["robust_score_typo"] = robust.get("suites", {}).get("typo", {}).get("robust_score")
        figures["rows"][name] = row
    adapter = _read(work / "adapter.json")
    if adapter:
        figures["adapter"] = adapter.get("figures", adapter)
    return figures


def print_table(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = {"exact_match": "exact", "mean_prefix_match": "prefix", "dev_nDCG@10": "nDCG@10",
            "dev_R(rel=4)@10": "R@10", "dev_R(rel=4)@100": "R@100", "dev_RR(rel=4)@10": "RR@10",
            "stage3_trainable_params": "stage-3 params", "train_seconds": "train s", "train_wall_s": "wall s"}
    table = Table(title=f"full profile, Home Depot dev, {figures['parallel_rows']} rows in parallel on "
                        f"{figures['device']}, {figures['budget_minutes']}-min budget per row")
    table.add_column("row")
    for header in [*cols.values(), "typo RS R@10"]:
        table.add_column(header, justify="right")
    for name, row in figures["rows"].items():
        robust = (row.get("robust_score_typo") or {}).get("R(rel=4)@10")
        table.add_row(name, *(str(row.get(c, "")) for c in cols), str(robust if robust is not None else ""))
    Console(width=160).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="write the shared data into DIR and stop")
    ap.add_argument("--from", dest="from_dir", type=Path, metavar="DIR", help="a folder written by --prepare")
    ap.add_argument("--work", type=Path, help="where models, logs and reports go (with --from)")
    ap.add_argument("--out", type=Path, help="JSON file for the figures (with --from)")
    ap.add_argument("--rows", nargs="*", help=f"rows to train (default all: {', '.join(ROWS)})")
    ap.add_argument("--budget-minutes", type=float, default=4.0, help="time_budget_minutes of every row")
    ap.add_argument("--memorise-max-epochs", type=int, default=60,
                    help="stage-2 epoch cap (the budget and the exact-match target usually end it first)")
    ap.add_argument("--deadline-minutes", type=float, default=9.0, help="kill what still runs after this long")
    ap.add_argument("--adapter-row", default=DEFAULT_ROW, help="row whose model the adapter is trained on")
    ap.add_argument("--adapter-epochs", type=int, default=None, help="adapter epochs (default: the library's)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare, args.seed)
        return
    if not (args.from_dir and args.work and args.out):
        ap.error("give --prepare DIR, or --from DIR --work W --out FILE.json")
    unknown = [r for r in args.rows or [] if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    figures = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    print_table(figures)


if __name__ == "__main__":
    main()
