"""The ``fusion`` artifact kind and "the fusion model promoted with this base": the one rule
``tandem serve``, ``tandem eval --system hybrid`` and ``tandem search`` use for ``--fusion auto``."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest

from tandem.fusion import RRF, RankedList, ScoreFusion
from tandem.fusion.factory import make_fuser, promoted_fusion_model
from tandem.fusion.learned import Example, LearnedFusion, title_lookup
from tandem.registry import ArtifactKind, Registry
from tandem.registry.fusion import MODEL_FILE, current_fusion_for_base, registry_base_of
from tandem.retriever import Hit
from tandem.search.catalog import InMemoryCatalog
from tandem_testing.synthetic_catalog import synthetic_catalog

ITEMS = synthetic_catalog(20).items
LOOKUP = InMemoryCatalog(ITEMS)


def _rl(source: str, pairs: list[tuple[str, float]]) -> RankedList:
    return RankedList(source=source, hits=[Hit(i, s, source) for i, s in pairs], intent="q", intent_weight=1.0,
                      intent_kind="query")


def _examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for q in range(n):
        items = [f"q{q}i{j}" for j in range(8)]
        rel = set(rng.sample(items, 2))
        bm = sorted(items, key=lambda i: (i in rel, rng.random()))
        gen = sorted(items, key=lambda i: (i not in rel, rng.random()))[:4]
        out.append(Example([_rl("bm25", [(i, 8.0 - r) for r, i in enumerate(bm)]),
                            _rl("generative", [(i, -float(r)) for r, i in enumerate(gen)])], dict.fromkeys(rel, 4)))
    return out


@pytest.fixture(scope="module")
def fusion_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fusion artifact's folder: a small LearnedFusion trained with title features (as the
    pipeline's is: it has the catalog) and its report."""
    folder = tmp_path_factory.mktemp("fusion")
    model, _ = LearnedFusion.train(_examples(30, 0), _examples(10, 1), titles=title_lookup({}),
                                   grid=[{"num_leaves": 4, "learning_rate": 0.2, "min_data_in_leaf": 5}])
    model.save(folder / MODEL_FILE)
    (folder / "report.json").write_text("{}")
    return folder


def _base(tmp_path: Path, reg: Registry, name: str, promote: bool = True) -> str:
    src = tmp_path / name
    src.mkdir()
    (src / "weights.bin").write_bytes(name.encode())
    return reg.publish(ArtifactKind.BASE_MODEL, src, promote=promote)


def test_fusion_is_a_kind_with_its_base_as_parent(tmp_path: Path, fusion_folder: Path) -> None:
    assert ArtifactKind.parse("fusion") is ArtifactKind.FUSION
    reg = Registry(tmp_path / "registry")
    base = _base(tmp_path, reg, "b1")
    version = reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{base}"], promote=True)
    assert reg.manifest(ArtifactKind.FUSION, version).parents == [f"base-model:{base}"]
    assert reg.current(ArtifactKind.FUSION) == version


def test_current_fusion_only_with_its_own_base(tmp_path: Path, fusion_folder: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(tmp_path / "registry")
    assert current_fusion_for_base(reg) is None  # nothing promoted at all
    b1 = _base(tmp_path, reg, "b1")
    assert current_fusion_for_base(reg) is None  # a base without a fusion model
    f1 = reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"])
    assert current_fusion_for_base(reg) is None  # published, not promoted
    reg.promote(ArtifactKind.FUSION, f1)
    found = current_fusion_for_base(reg)
    assert found is not None and found.ref == f"fusion:{f1}" and found.base == f"base-model:{b1}"
    assert found.path == tmp_path / "registry" / "fusion" / f1 / MODEL_FILE and found.path.is_file()
    # A newer base without its own fusion model: the old one is not served with it.
    b2 = _base(tmp_path, reg, "b2")
    with caplog.at_level(logging.WARNING, logger="tandem.registry.fusion"):
        assert current_fusion_for_base(reg) is None
    assert f"trained on base-model:{b1}, not on base-model:{b2}" in caplog.text
    assert current_fusion_for_base(reg, b1) == found  # asked for the base it was trained on


def test_corrupt_fusion_model_is_not_used(tmp_path: Path, fusion_folder: Path) -> None:
    reg = Registry(tmp_path / "registry")
    b1 = _base(tmp_path, reg, "b1")
    f1 = reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    (tmp_path / "registry" / "fusion" / f1 / MODEL_FILE).write_text("{}")
    assert current_fusion_for_base(reg) is None


def test_object_store_registry_downloads_the_model(tmp_path: Path, fusion_folder: Path) -> None:
    reg = Registry(f"memory://fusion-{tmp_path.name}")
    b1 = _base(tmp_path, reg, "b1")
    f1 = reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    found = current_fusion_for_base(reg, cache_dir=tmp_path / "cache")
    assert found is not None and found.path == tmp_path / "cache" / f1 / MODEL_FILE
    assert found.path.read_bytes() == (fusion_folder / MODEL_FILE).read_bytes()


def test_registry_base_of_recognises_registry_model_folders(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    b1 = _base(tmp_path, reg, "b1")
    located = registry_base_of(tmp_path / "registry" / "base-model" / b1)
    assert located is not None and located[1] == b1 and Path(located[0].root) == tmp_path / "registry"
    assert registry_base_of(tmp_path / "b1") is None  # the source folder: not a registry version
    assert registry_base_of(tmp_path / "nowhere") is None


def test_auto_takes_the_promoted_fusion_model_else_the_usual_rule(tmp_path: Path, fusion_folder: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    uri = str(tmp_path / "registry")
    reg = Registry(uri)
    b1 = _base(tmp_path, reg, "b1")
    model_dir = tmp_path / "registry" / "base-model" / b1
    assert promoted_fusion_model("auto", None, registry=uri) is None  # no fusion promoted: the rule
    assert isinstance(make_fuser("auto", None, registry=uri), RRF)
    f1 = reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    expected = LearnedFusion.load(fusion_folder / MODEL_FILE, titles=title_lookup({})).version()
    with caplog.at_level(logging.INFO, logger="tandem.fusion.factory"):
        fuser = make_fuser("auto", None, LOOKUP, registry=uri)
    assert isinstance(fuser, LearnedFusion) and fuser.version() == expected
    assert f"learned fusion fusion:{f1}, promoted with base-model:{b1}" in caplog.text  # says which
    assert make_fuser("auto", None, LOOKUP, model=model_dir).version() == expected  # --model into the registry
    # An explicit choice or model wins; a model folder outside the registry has no promoted fusion.
    assert isinstance(make_fuser("rrf", None, registry=uri), RRF)
    assert isinstance(make_fuser("auto", None, has_intents=True, model=tmp_path / "b1"), ScoreFusion)
    other = tmp_path / "other.json"
    other.write_bytes((fusion_folder / MODEL_FILE).read_bytes())
    assert promoted_fusion_model("auto", other, registry=uri) == other


def test_a_promoted_model_that_cannot_load_here_falls_back(tmp_path: Path, fusion_folder: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Trained with title features, served without titles (a gateway without --catalog): the
    default falls back with a warning; a --fusion-model given by name still fails loudly."""
    from tandem.errors import CorruptArtifact

    uri = str(tmp_path / "registry")
    reg = Registry(uri)
    b1 = _base(tmp_path, reg, "b1")
    reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    with caplog.at_level(logging.WARNING, logger="tandem.fusion.factory"):
        assert isinstance(make_fuser("auto", None, None, registry=uri), RRF)
        assert isinstance(make_fuser("auto", None, None, has_intents=True, registry=uri), ScoreFusion)
    assert "cannot use the promoted fusion model" in caplog.text
    with pytest.raises(CorruptArtifact):
        make_fuser("auto", fusion_folder / MODEL_FILE, None, registry=uri)


def test_serve_auto_fusion_picks_the_promoted_one(tmp_path: Path, fusion_folder: Path) -> None:
    """The rule of the one searcher assembly (``build_searcher``) that serve, search and eval use."""
    from tandem.search.build import SearcherSpec, build_searcher
    from tandem_testing.term_overlap import TermOverlapRetriever

    def _fuser(fusion: str, fusion_model: Path | None, lookup: Any, **kw: Any) -> Any:
        searcher = build_searcher(SearcherSpec(sources=[TermOverlapRetriever(ITEMS, name="bm25")], fusion=fusion,
                                               fusion_model=fusion_model, catalog=lookup, **kw))
        searcher.close()
        return searcher.fuser

    uri = str(tmp_path / "registry")
    reg = Registry(uri)
    b1 = _base(tmp_path, reg, "b1")
    f1 = reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    version = LearnedFusion.load(fusion_folder / MODEL_FILE, titles=title_lookup({})).version()
    assert _fuser("auto", None, LOOKUP, registry=uri).version() == version
    assert _fuser("auto", None, LOOKUP, model=tmp_path / "registry" / "base-model" / b1).version() == version
    # A new base promoted without a fusion model of its own: back to the rule, never the stale model.
    _base(tmp_path, reg, "b2")
    assert isinstance(_fuser("auto", None, LOOKUP, registry=uri), RRF)
    reg.promote(ArtifactKind.BASE_MODEL, b1)
    assert reg.current(ArtifactKind.FUSION) == f1 and _fuser("auto", None, LOOKUP, registry=uri).version() == version


def test_eval_hybrid_auto_uses_the_fusion_model_of_a_registry_model(tmp_path: Path, fusion_folder: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from tandem.eval import systems
    from tandem_testing.term_overlap import TermOverlapRetriever

    items = ITEMS
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in items))
    monkeypatch.setitem(systems._SYSTEMS, "bm25", lambda spec: TermOverlapRetriever(items, name="bm25"))
    monkeypatch.setitem(systems._SYSTEMS, "generative", lambda spec: TermOverlapRetriever(items, name="generative"))
    reg = Registry(tmp_path / "registry")
    b1 = _base(tmp_path, reg, "b1")
    model_dir = tmp_path / "registry" / "base-model" / b1
    hybrid = systems.build_system("hybrid", systems.SystemSpec(catalog=catalog, model=model_dir, home=tmp_path))
    assert isinstance(hybrid.searcher.fuser, RRF)  # no fusion model promoted with it yet
    reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    hybrid = systems.build_system("hybrid", systems.SystemSpec(catalog=catalog, model=model_dir, home=tmp_path))
    assert isinstance(hybrid.searcher.fuser, LearnedFusion)
    assert hybrid.retrieve([items[0].title], 5)[0]
    # `--fusion rrf` (what `tandem fusion train` records with) is never replaced.
    rrf = systems.build_system("hybrid", systems.SystemSpec(catalog=catalog, model=model_dir, home=tmp_path,
                                                            options={"fusion": "rrf"}))
    assert isinstance(rrf.searcher.fuser, RRF)


def test_search_hybrid_uses_the_fusion_model_of_a_registry_model(tmp_path: Path, fusion_folder: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import tandem.generative
    import tandem.jvm
    import tandem.sparse
    from typer.testing import CliRunner

    from tandem_app.cli import app
    from tandem_testing.term_overlap import TermOverlapRetriever

    items = ITEMS

    class Sparse(TermOverlapRetriever):
        def documents(self, ids: list[str]) -> dict[str, dict[str, str]]:
            return {i.item_id: {"title": i.title} for i in items if i.item_id in set(ids)}

    monkeypatch.setattr(tandem.jvm, "ensure_jvm", lambda: None)
    monkeypatch.setattr(tandem.sparse, "SparseRetriever", lambda *a, **k: Sparse(items, name="bm25"))
    monkeypatch.setattr(tandem.generative, "load_retriever", lambda *a, **k: TermOverlapRetriever(items, "generative"))
    reg = Registry(tmp_path / "registry")
    b1 = _base(tmp_path, reg, "b1")
    reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    (tmp_path / "index").mkdir()
    version = LearnedFusion.load(fusion_folder / MODEL_FILE, titles=title_lookup({})).version()

    def search(model: Path) -> str:
        res = CliRunner().invoke(app, ["search", items[0].title, "--index", str(tmp_path / "index"),
                                       "--source", "hybrid", "--model", str(model)])
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())

    assert f"fusion={version}" in search(tmp_path / "registry" / "base-model" / b1)
    assert "fusion=rrf" in search(tmp_path / "b1")  # a model from outside the registry: the rule


def test_gateway_auto_fusion_takes_the_registry_s_promoted_model(tmp_path: Path, fusion_folder: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``tandem serve gateway --generative ... --registry URI``: the fusion model promoted with
    the registry's current base (the one the generative service follows)."""
    import json

    import tandem_services.app
    from typer.testing import CliRunner

    import tandem_app.cli.serve as serve
    from tandem_app.cli import app

    built: list[object] = []
    monkeypatch.setattr(serve, "_run", lambda build, *a: built.append(build()))
    monkeypatch.setattr(serve, "_watch_cache", lambda server, cache: server)
    monkeypatch.setattr(tandem_services.app, "gateway_server", lambda searcher, opts, **kw: searcher)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in ITEMS))
    reg = Registry(tmp_path / "registry")
    b1 = _base(tmp_path, reg, "b1")
    reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    args = ["serve", "gateway", "--sparse", "127.0.0.1:1", "--catalog", str(catalog),
            "--registry", str(tmp_path / "registry")]
    for extra, expected in (([], RRF), (["--generative", "127.0.0.1:2"], LearnedFusion)):
        res = CliRunner().invoke(app, args + extra)
        assert res.exit_code == 0, res.output + repr(res.exception)
        searcher: Any = built.pop()
        try:
            assert isinstance(searcher.fuser, expected), extra
        finally:
            searcher.close()
            for r in searcher.retrievers:
                r.close()


def test_the_promoted_fusion_model_brings_the_intent_decomposer_it_was_fitted_with(
        tmp_path: Path, fusion_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``build_searcher``'s intents: given ones win; else, for ``auto`` with the promoted fusion
    model, its artifact's ``intent.json``; an artifact without one (or a broken one) gives whole
    queries, never a failed start."""
    import shutil

    from tandem.intent import CatalogIntentDecomposer, WholeQuery
    from tandem.registry.fusion import INTENT_FILE
    from tandem.search.build import SearcherSpec, spec_intents

    uri = str(tmp_path / "registry")
    reg = Registry(uri)
    b1 = _base(tmp_path, reg, "b1")
    reg.publish(ArtifactKind.FUSION, fusion_folder, parents=[f"base-model:{b1}"], promote=True)
    assert spec_intents(SearcherSpec(sources=[], registry=uri)) is None  # published before intents shipped
    with_intents = tmp_path / "fusion-with-intents"
    shutil.copytree(fusion_folder, with_intents)
    fitted = CatalogIntentDecomposer.fit([it.title for it in ITEMS], min_count=1)
    fitted.save(with_intents)
    b2 = _base(tmp_path, reg, "b2")
    reg.publish(ArtifactKind.FUSION, with_intents, parents=[f"base-model:{b2}"], promote=True)
    got = spec_intents(SearcherSpec(sources=[], registry=uri))
    assert got is not None and got.version() == fitted.version()
    model_dir = tmp_path / "registry" / "base-model" / b2
    assert spec_intents(SearcherSpec(sources=[], model=model_dir)).version() == fitted.version()  # type: ignore[union-attr]
    # An explicit choice wins: another fusion, a fusion model by name, intents or a whole query given.
    assert spec_intents(SearcherSpec(sources=[], registry=uri, fusion="rrf")) is None
    assert spec_intents(SearcherSpec(sources=[], registry=uri, fusion_model=with_intents / MODEL_FILE)) is None
    whole = WholeQuery()
    assert spec_intents(SearcherSpec(sources=[], registry=uri, intents=whole)) is whole
    (with_intents / INTENT_FILE).write_text('{"format": "tandem.intent/0"}')  # published broken
    b3 = _base(tmp_path, reg, "b3")
    reg.publish(ArtifactKind.FUSION, with_intents, parents=[f"base-model:{b3}"], promote=True)
    with caplog.at_level(logging.WARNING, logger="tandem.search.build"):
        assert spec_intents(SearcherSpec(sources=[], registry=uri)) is None
    assert "cannot use" in caplog.text and "whole queries" in caplog.text


def test_a_searcher_reads_the_promoted_fusion_artifact_once_for_its_fuser_and_its_intents(
        tmp_path: Path, fusion_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import tandem.registry.fusion as registry_fusion
    from tandem.intent import CatalogIntentDecomposer
    from tandem.search.build import SearcherSpec, build_searcher
    from tandem_testing.term_overlap import TermOverlapRetriever

    uri = str(tmp_path / "registry")
    reg = Registry(uri)
    b1 = _base(tmp_path, reg, "b1")
    folder = tmp_path / "fusion-with-intents"
    shutil.copytree(fusion_folder, folder)
    CatalogIntentDecomposer.fit([it.title for it in ITEMS], min_count=1).save(folder)
    reg.publish(ArtifactKind.FUSION, folder, parents=[f"base-model:{b1}"], promote=True)
    reads = []
    real = registry_fusion.current_fusion_for_base
    monkeypatch.setattr(registry_fusion, "current_fusion_for_base", lambda *a, **k: reads.append(a) or real(*a, **k))
    searcher = build_searcher(SearcherSpec(sources=[TermOverlapRetriever(ITEMS, name="bm25")], catalog=LOOKUP,
                                           registry=uri))
    searcher.close()
    assert isinstance(searcher.fuser, LearnedFusion) and searcher.intents is not None
    assert len(reads) == 1
