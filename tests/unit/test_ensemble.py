"""Ensemble of generative models: averaged ID probabilities behind the Retriever interface."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from tandem.errors import InvalidInput
from tandem_testing.tiny_catalog import tiny_catalog

ITEMS = tiny_catalog()
QUERIES = ["cordless drill", "garden hose", "white paint"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    from tandem_testing.model_fixtures import untrained_model_dir

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ens")
    return (untrained_model_dir(root / "a", ITEMS, seed=1), untrained_model_dir(root / "b", ITEMS, seed=2))


def test_single_member_matches_the_generative_retriever(models: tuple[Path, Path]) -> None:
    from tandem.generative.ensemble import EnsembleRetriever
    from tandem.generative.retriever import GenerativeRetriever

    single = GenerativeRetriever(models[0], device="cpu", num_beams=5)
    ens = EnsembleRetriever([models[0]], device="cpu", num_beams=5)
    for a, b in zip(single.retrieve(QUERIES, 5), ens.retrieve(QUERIES, 5), strict=True):
        assert [h.item_id for h in a] == [h.item_id for h in b]
        for ha, hb in zip(a, b, strict=True):
            assert hb.score == pytest.approx(ha.score, abs=1e-4)
    ens.close()
    single.close()


def test_scores_are_the_log_of_the_mean_member_probability(models: tuple[Path, Path]) -> None:
    from tandem.generative.ensemble import EnsembleRetriever
    from tandem.generative.retriever import GenerativeRetriever

    n = len(ITEMS)
    # Beams covering the whole catalog make every member's search exact.
    members = [GenerativeRetriever(m, device="cpu", num_beams=n) for m in models]
    per_member = [{h.item_id: h.score for h in m.retrieve(QUERIES, n)[0]} for m in members]
    ens = EnsembleRetriever(list(models), device="cpu", num_beams=4)
    hits = ens.retrieve(QUERIES, 6)
    assert all(len(h) == 6 for h in hits)
    for h in hits[0]:
        expected = math.log((math.exp(per_member[0][h.item_id]) + math.exp(per_member[1][h.item_id])) / 2)
        assert h.score == pytest.approx(expected, abs=1e-4)
    assert [h.score for h in hits[0]] == sorted((h.score for h in hits[0]), reverse=True)
    assert ens.version() == f"{members[0].version()}+{members[1].version()}"
    ens.close()


def test_factory_and_bad_inputs(models: tuple[Path, Path], tmp_path: Path) -> None:
    from tandem.generative.ensemble import EnsembleRetriever, ensemble_system
    from tandem_testing.model_fixtures import untrained_model_dir

    ens = ensemble_system(SimpleNamespace(model=models[0].parent, options={"device": "cpu", "num_beams": 3}))
    assert len(ens.members) == 2 and len(ens.retrieve(["hose"], 3)[0]) == 3
    ens.close()
    with pytest.raises(InvalidInput, match="`--model`"):
        ensemble_system(SimpleNamespace(model=tmp_path, options={}))
    other = untrained_model_dir(tmp_path / "other", ITEMS[:12])
    with pytest.raises(InvalidInput, match="different items"):
        EnsembleRetriever([models[0], other], device="cpu")
