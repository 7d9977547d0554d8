"""Home Depot dev with a title-only BM25 index matches BENCHMARK.md's reference.

Reference (Pyserini 1.6 defaults, k1=0.9 b=0.4, title field): nDCG@10 0.381, R@10 0.422,
R@100 0.709, MRR@10 0.410. One index build of 54,667 products (about a minute on 2 cores).
Products have titles only, so ``contents`` (all fields) and ``title`` hold the same text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration



def _data_dir() -> Path:
    from tandem.catalog.datasets import data_root
    from tandem.errors import InvalidInput

    try:
        return data_root("homedepot")
    except InvalidInput as exc:
        pytest.skip(f"{exc} (CI provides ../shared/data next to the repository)")


@pytest.fixture(scope="module")
def homedepot(java_home: object, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tandem.catalog.datasets import load_homedepot
    from tandem.sparse import build_index

    ds = load_homedepot(_data_dir(), splits=("dev",))
    assert ds.catalog.skipped == 0 and len(ds.catalog.items) == 54_667
    index_dir = tmp_path_factory.mktemp("homedepot") / "index"
    stats = build_index(ds.catalog.items, index_dir)
    assert stats.documents == 54_667
    return {"ds": ds, "index": index_dir}


def test_dev_matches_the_reference(homedepot: dict) -> None:
    from tandem.eval import default_measures, evaluate, run_retriever
    from tandem.sparse import SparseConfig, SparseRetriever

    ds = homedepot["ds"]
    measures = default_measures(4)
    for fields in ({"contents": 1.0}, {"title": 1.0}):
        with SparseRetriever(homedepot["index"], SparseConfig(fields=fields), writable=False) as r:
            run = run_retriever(r, ds.queries["dev"], k=100, batch_size=256)
        res = evaluate(run, ds.qrels["dev"], measures, queries=list(ds.queries["dev"]))
        assert res.queries == 1234
        m = res.metrics
        assert m["nDCG@10"] == pytest.approx(0.381, abs=0.005), (fields, m)
        assert m["R(rel=4)@10"] == pytest.approx(0.422, abs=0.005), (fields, m)
        assert m["R(rel=4)@100"] == pytest.approx(0.709, abs=0.005), (fields, m)
        assert m["RR(rel=4)@10"] == pytest.approx(0.410, abs=0.005), (fields, m)
