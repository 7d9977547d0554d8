"""Evaluation: runs from retrievers or TREC files, ir-measures metrics, significance, reports."""

from tandem.eval.metrics import (
    EvalResult,
    Significance,
    default_measures,
    evaluate,
    paired_significance,
)
from tandem.eval.report import plot_comparison, write_per_query_csv, write_report
from tandem.eval.runs import Run, read_trec_run, run_retriever, write_trec_run
from tandem.eval.systems import SystemSpec, build_system, register_system, system_names

__all__ = [
    "EvalResult",
    "Run",
    "Significance",
    "SystemSpec",
    "build_system",
    "default_measures",
    "evaluate",
    "paired_significance",
    "plot_comparison",
    "read_trec_run",
    "register_system",
    "run_retriever",
    "system_names",
    "write_per_query_csv",
    "write_report",
    "write_trec_run",
]
