"""``torchrun --nproc-per-node 2 -m tandem_app.cli train generative --profile ci`` equals one process.

Every rank takes its slice of every batch of the same seeded plan and the gradients are summed
weighted by each rank's share of the batch; the loss is a mean over the batch, so in exact
arithmetic the two ranks take exactly the updates one process takes (see
:mod:`tandem.training.distributed`). What remains is floating point: a different summation
order of the reduced gradients, the encoder run on other batch shapes (sharded encoding, the
LoRA stage). Both runs compute in fp32 (``precision=fp32``): on a CPU with AMX, bf16 autocast
of the encoder moved the encoder stage's loss by 2e-3 between the two runs — rounding, not
the property tested here. Measured on the 2-core build machine (AVX2, fp32): relative
differences of the stage losses 2e-7 (memorise), 7e-7 (align), 5e-6 (encoder). ``REL_TOL`` = 1e-3 leaves two orders of magnitude for other CPUs and thread counts
while a real mistake (e.g. averaging instead of share-weighting, a rank's batches dropped or
doubled, unsynchronised LoRA weights) moves the losses by percents.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.catalog.queries import write_queries
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e

REL_TOL = 1e-3
N_ITEMS = 80
ARGS = ["train", "generative", "--profile", "ci", "--seed", "13", "--device", "cpu", "--no-progress",
        "--set", "threads=1", "--set", "memorise_epochs=2", "--set", "align_epochs=2", "--set", 'precision="fp32"']


def _start(cmd: list[str], home: Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with its own ``TANDEM_HOME``, its output (merged) going to ``log``."""
    env = {**os.environ, "TANDEM_HOME": str(home), "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "x"}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for ``proc`` (300 s at most, then kill it) and assert it succeeded."""
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} ran over 300 s:\n{log.read_text()[-3000:]}") from None
    assert proc.returncode == 0, log.read_text()[-6000:]


def test_two_ranks_give_the_losses_of_one_process(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun ships with torch next to the interpreter"
    s = synthetic_catalog(N_ITEMS)
    (tmp_path / "catalog.jsonl").write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n"
                                                    for it in s.items))
    write_queries(s.train_queries, tmp_path / "q.tsv")
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in s.train_qrels.items()
                                                for i, g in rel.items()))
    files = ["--catalog", "catalog.jsonl", "--train-queries", "q.tsv", "--train-qrels", "qrels.txt"]
    # separate homes: each run encodes its own states (the two-rank run by shards). The runs share
    # nothing, so the one-process run (one thread) runs beside the two ranks rather than before them.
    runs = {"one": [sys.executable, "-m", "tandem_app.cli", *ARGS, *files, "--out", "one"],
            "two": [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "tandem_app.cli", *ARGS, *files,
                    "--out", "two"]}
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for home, (name, cmd) in zip(("h1", "h2"), runs.items(), strict=True):
            started.append((_start(cmd, tmp_path / home, tmp_path, tmp_path / f"{name}.log"), tmp_path / f"{name}.log"))
        for proc, log in started:
            _finish(proc, log)
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    one = json.loads((tmp_path / "one" / "training_summary.json").read_text())
    two = json.loads((tmp_path / "two" / "training_summary.json").read_text())
    assert two["world_size"] == 2 and "world_size" not in one
    assert set(two["stages"]) == set(one["stages"]) == {"init", "memorise", "align", "encoder"}
    for stage in ("memorise", "align", "encoder"):
        a, b = one["stages"][stage], two["stages"][stage]
        assert b["samples"] == a["samples"], stage  # the same global batches, every one once
        assert b["final_loss"] == pytest.approx(a["final_loss"], rel=REL_TOL), stage
        assert b["memorisation"]["exact_match"] == a["memorisation"]["exact_match"], stage
    assert two["final_memorisation"]["exact_match"] == one["final_memorisation"]["exact_match"]
    # stage 1 (every rank takes each whole batch) ends at the same encoder as one process
    assert two["adapt"]["steps"] == one["adapt"]["steps"] > 0
    assert two["adapt"]["final_loss"] == pytest.approx(one["adapt"]["final_loss"], rel=REL_TOL)
    # rank 0 alone wrote the model folder and the encoder-state caches (one file per text set and
    # encoder: item texts under the pretrained encoder for the IDs, item texts and queries under the adapted one)
    assert (tmp_path / "two" / "manifest.json").is_file()
    assert len(list((tmp_path / "h2" / "cache" / "encoder-states").glob("*.npz"))) == 3
