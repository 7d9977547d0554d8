"""Running the pipelines on one machine with ``kfp.local`` (each step a subprocess of this Python)."""

from __future__ import annotations

import inspect
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput, TandemError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PipelineFailed(TandemError):
    """A local pipeline run failed; the failing step's own error is in its log above."""


def _pipelines() -> dict[str, tuple[Any, str]]:
    """name → (pipeline function, the task whose ``registered`` output ends a run)."""
    from tandem_pipelines.adapter import adapter_pipeline
    from tandem_pipelines.base import base_pipeline
    from tandem_pipelines.merge_step import merge_pipeline

    return {"base": (base_pipeline, "register-base"), "adapter": (adapter_pipeline, "register-adapter"),
            "merge": (merge_pipeline, "register-base")}


def run_local(pipeline: str, params: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Run pipeline ``base``, ``adapter`` or ``merge`` (the monthly base from the previous one) locally with ``params``; returns what its register
    step recorded (``{"registered": False, ...}`` when an adapter run found nothing new).

    ``root`` holds every step's artifacts (default ``<TANDEM_HOME>/pipeline-runs``).
    """
    from kfp import local

    from tandem.config import get_settings

    pipelines = _pipelines()
    if pipeline not in pipelines:
        raise InvalidInput(f"`pipeline` must be one of {', '.join(pipelines)}, got {pipeline!r}")
    func, register_task = pipelines[pipeline]
    signature = inspect.signature(func.pipeline_func).parameters
    unknown = sorted(set(params) - set(signature))
    if unknown:
        raise InvalidInput(f"`--param` {', '.join(unknown)}: not a {pipeline} pipeline parameter "
                           f"({', '.join(sorted(signature))})")
    missing = sorted(n for n, p in signature.items() if p.default is inspect.Parameter.empty and n not in params)
    if missing:
        raise InvalidInput(f"`--param` missing: the {pipeline} pipeline needs {', '.join(missing)}")
    pipeline_root = root or get_settings().home / "pipeline-runs"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    started = time.time()
    try:
        with warnings.catch_warnings():
            # Expected on one machine: resources/display names are cluster settings, and the
            # steps run in this environment rather than in the project image.
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            func(**params)
    except RuntimeError as e:  # kfp.local's "Pipeline ... finished with status FAILURE"
        raise PipelineFailed(f"{_ANSI.sub('', str(e))} The step's error is in its log above.") from None
    name = func.name if hasattr(func, "name") else f"tandem-{pipeline}"
    registered = [p for p in pipeline_root.glob(f"{name}-*/{register_task}/registered") if p.stat().st_mtime >= started]
    if not registered:
        if pipeline == "adapter":
            return {"registered": False, "reason": "no items added or changed since the current base"}
        raise PipelineFailed(f"the run finished without a `register` output under {pipeline_root}")
    return json.loads(max(registered, key=lambda p: p.stat().st_mtime).read_text())
