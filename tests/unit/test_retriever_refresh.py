"""The refresh capability is declared on the Retriever interface: the Admin ``Reload`` (the
gateway's and a retriever service's) refreshes every source that declares it, through
wrappers too, and no other."""

from __future__ import annotations

import pytest

from tandem.errors import InvalidInput
from tandem.retriever import Retriever, refresh_sources
from tandem.search.orchestrator import HybridSearcher
from tandem.search.sources import SerializedRetriever
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.servicers import retriever_reloader

ITEMS = tiny_catalog()


class Following(TermOverlapRetriever):
    """Declares the capability the way SparseRetriever does: it overrides ``refresh``."""

    def refresh(self) -> bool:
        self.set_version(str(int(self.version()) + 1))
        return True


class Legacy(TermOverlapRetriever):
    """A source written against the older name, ``reload``."""

    def reload(self) -> None:
        self.set_version(str(int(self.version()) + 1))


def test_the_capability_is_declared_not_guessed() -> None:
    assert Following(ITEMS, name="a").refreshable and Legacy(ITEMS, name="b").refreshable
    plain = TermOverlapRetriever(ITEMS, name="c")
    assert not plain.refreshable and plain.refresh() is False
    assert SerializedRetriever(Following(ITEMS, name="a")).refreshable
    assert not SerializedRetriever(plain).refreshable


def test_sparse_retriever_declares_it() -> None:
    from tandem.sparse.retriever import SparseRetriever

    assert SparseRetriever.refresh is not Retriever.refresh  # so every instance is refreshable


@pytest.mark.parametrize("wrap", [False, True])
def test_gateway_reload_refreshes_each_refreshable_source(wrap: bool) -> None:
    following = Following(ITEMS, name="bm25")
    source = SerializedRetriever(following) if wrap else following
    s = HybridSearcher([source, Legacy(ITEMS, name="generative"), TermOverlapRetriever(ITEMS, name="other")])
    assert s.reload() == ["bm25", "generative"]
    versions = s.versions()
    assert (versions["bm25"], versions["generative"], versions["other"]) == ("2", "2", "1")
    assert s.reload(["bm25"]) == ["bm25"] and s.versions()["bm25"] == "3"
    with pytest.raises(InvalidInput, match="`sources`"):
        s.reload(["nope"])


def test_retriever_service_reload_refreshes_a_serialized_sparse_like_source() -> None:
    # The sparse service wraps its retriever; its Admin Reload used to look for `reload()` only.
    bm25 = SerializedRetriever(Following(ITEMS, name="bm25"))
    reload = retriever_reloader([bm25])
    assert reload([]) == ["bm25"] and bm25.version() == "2"
    with pytest.raises(InvalidInput, match="`sources`"):
        reload(["generative"])
    assert refresh_sources([bm25], ["other"]) == []
