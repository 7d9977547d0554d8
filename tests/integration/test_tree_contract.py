"""``TreeRetriever`` (generative v2) against the shared Retriever contract, on a model trained here.

A v2 model is trained (seconds: the pretrained encoder does most of the work) on the 24-item
tiny catalog through every stage, so the contract's "expected item in the top K" checks run
real trie-constrained decoding of a trained model, in the served precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.generative.tree_retriever import TreeRetriever
from tandem.testing.retriever_contract import RetrieverContract
from tandem.testing.tiny_catalog import tiny_catalog

pytestmark = pytest.mark.integration

QUERIES = {"cordless drill": "t01", "garden hose": "t18", "kitchen faucet": "t21", "claw hammer": "t09",
           "led bulb": "t15"}


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    out = tmp_path_factory.mktemp("tree") / "model"
    cfg = tree_profile("ci", batch_size=8, lora_batch_size=8, threads=1)
    summary = train_tree(tiny_catalog(), list(QUERIES.items()) * 2, out, cfg, cache_dir=out.parent / "cache",
                         echo=lambda _m: None)
    assert summary["final_memorisation"]["exact_match"] >= 0.9
    return out


class TestTreeRetrieverContract(RetrieverContract):
    EXPECTED = QUERIES
    NO_MATCH_QUERY = None  # constrained decoding always lands on some item

    @pytest.fixture
    def retriever(self, trained_dir: Path) -> Iterator[TreeRetriever]:
        r = TreeRetriever(trained_dir, num_beams=5)
        yield r
        r.close()


def test_eval_system_factory_builds_the_tree_retriever(trained_dir: Path) -> None:
    from tandem.eval import SystemSpec, build_system

    r = build_system("generative", SystemSpec(model=trained_dir, options={"num_beams": "5", "rm3": False}))
    assert isinstance(r, TreeRetriever) and r.num_beams == 5
    assert r.retrieve(["garden hose"], 1)[0][0].item_id == "t18"
