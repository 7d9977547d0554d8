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
from tandem_testing.retriever_contract import RetrieverContract
from tandem_testing.tiny_catalog import tiny_catalog

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

    @pytest.fixture(scope="class")
    def retriever(self, trained_dir: Path) -> Iterator[TreeRetriever]:
        """One retriever for the whole contract (the checks only call ``retrieve``): loading the
        encoder took ~0.3 s per test."""
        r = TreeRetriever(trained_dir, num_beams=5)
        yield r
        r.close()


def test_eval_system_factory_builds_the_tree_retriever(trained_dir: Path) -> None:
    from tandem.eval import SystemSpec, build_system

    r = build_system("generative", SystemSpec(model=trained_dir, options={"num_beams": "5", "rm3": False}))
    assert isinstance(r, TreeRetriever) and r.num_beams == 5
    assert r.retrieve(["garden hose"], 1)[0][0].item_id == "t18"


def test_item_scores_over_grpc_match_in_process_and_reach_the_fuser(trained_dir: Path) -> None:
    """The deployed path of issue 18: the gateway's RemoteRetriever learns the score names from
    Info, asks the generative service's Score RPC for every candidate, and bad calls are
    INVALID_ARGUMENT."""
    from tandem.errors import InvalidInput
    from tandem.fusion import RRF
    from tandem.search.orchestrator import HybridSearcher
    from tandem.search.request import SearchConfig, SearchRequest
    from tandem_testing.term_overlap import TermOverlapRetriever
    from tandem_services.app import retriever_server
    from tandem_services.client import RemoteRetriever
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    local = TreeRetriever(trained_dir, num_beams=5)
    bm25 = TermOverlapRetriever(tiny_catalog(), name="bm25", version="idx-1")
    srv = BackgroundServer(lambda: retriever_server([local, bm25], ServerOptions(drain_s=0.0, grace_s=1.0)))
    srv.start()
    remote = RemoteRetriever(srv.address, "generative", source="generative", timeout_s=5.0)
    try:
        assert remote.score_names == ("gen_logprob", "gen_cosine")
        ids = ["t18", "t01", "unknown"]
        got, want = remote.score_items("garden hose", ids), local.score_items("garden hose", ids)
        assert got[2] is None and want[2] is None
        for g, w in zip(got[:2], want[:2]):
            assert g == pytest.approx(w, abs=1e-4)
        with pytest.raises(InvalidInput, match="does not score"):
            RemoteRetriever(srv.address, "bm25", source="bm25").score_items("hose", ["t18"])
        with pytest.raises(InvalidInput, match="query"):
            remote.score_items(" ", ["t18"])

        class Wants(RRF):
            score_names = ("gen_logprob",)
            seen: dict = {}

            def fuse(self, lists, k, item_scores=None):  # type: ignore[no-untyped-def]
                Wants.seen = dict(item_scores or {})
                return super().fuse(lists, k)

        searcher = HybridSearcher([bm25, remote], fuser=Wants(), config=SearchConfig(deadline_s=5.0))
        result = searcher.search(SearchRequest(query="garden hose", top_k=5))
        assert not result.degraded and "t18" in Wants.seen and set(Wants.seen["t18"]) == {"gen_logprob", "gen_cosine"}
        searcher.close()
    finally:
        remote.close()
        srv.stop()
        local.close()
