"""Benchmarks: ``python -m bench.<name> [--quick] --out FILE.json``.

Benchmarks use the test-support package (synthetic catalogs, fault harnesses), which the
wheel does not ship: importing ``bench`` puts ``testsupport/`` on the path (and on
PYTHONPATH for the processes a benchmark starts).
"""

import os
import sys
from pathlib import Path

_SUPPORT = str(Path(__file__).resolve().parents[1] / "testsupport")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_SUPPORT, os.environ.get("PYTHONPATH")) if p)
