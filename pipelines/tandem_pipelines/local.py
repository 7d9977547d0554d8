"""Running the pipelines on one machine with ``kfp.local`` (each step a subprocess of this Python)."""

from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput, TandemError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PipelineFailed(TandemError):
    """A local pipeline run failed; the failing step's own error is in its log above."""


def run_base_local(params: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Run the base pipeline locally with ``params``; returns what the register step recorded.

    ``root`` holds every step's artifacts (default ``<TANDEM_HOME>/pipeline-runs``).
    """
    from kfp import local

    from tandem.config import get_settings
    from tandem_pipelines.base import base_pipeline

    accepted = set(inspect.signature(base_pipeline.pipeline_func).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InvalidInput(f"`--param` {', '.join(unknown)}: not a base pipeline parameter "
                           f"({', '.join(sorted(accepted))})")
    pipeline_root = root or get_settings().home / "pipeline-runs"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    try:
        with warnings.catch_warnings():
            # Expected on one machine: resources/display names are cluster settings, and the
            # steps run in this environment rather than in the project image.
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            base_pipeline(**params)
    except RuntimeError as e:  # kfp.local's "Pipeline ... finished with status FAILURE"
        raise PipelineFailed(f"{_ANSI.sub('', str(e))} The step's error is in its log above.") from None
    registered = sorted(pipeline_root.glob("tandem-base-*/register-base/registered"), key=lambda p: p.stat().st_mtime)
    if not registered:
        raise PipelineFailed(f"the run finished without a `register` output under {pipeline_root}")
    return json.loads(registered[-1].read_text())
