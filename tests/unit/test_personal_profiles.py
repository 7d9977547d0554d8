"""Behaviour profiles (issue 22 item 1): decay, dedupe, stores, fail-open reads, the re-ranker."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.feedback.events import FeedbackEvent
from tandem.fusion.rrf import RRF
from tandem.fusion.base import RankedList
from tandem.personal import (
    ItemVectors, MemoryProfileStore, PersonalFuser, ProfileConfig, ProfileReader, RedisProfileStore, UserProfile,
)
from tandem.personal.consumer import ProfileApplier
from tandem.retriever import Hit

T0 = 1_800_000_000.0


def _vectors() -> ItemVectors:
    v = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    return ItemVectors(["a", "a2", "b", "c"], v, np.array([[1, 1, 0], [1, 2, 0], [2, 1, 0], [3, 1, 0]]))


def _click(item: str, ts: float, user: str = "u1", kind: str = "click", rid: str = "r1") -> FeedbackEvent:
    return FeedbackEvent(rid, user, item, kind, 1, ts)


def test_profile_decays_by_half_life_and_ignores_replays():
    cfg = ProfileConfig(half_life_s=100.0)
    p = UserProfile.empty(3)
    assert p.add("e1", np.array([1, 0, 0], np.float32), (1, 1), 1.0, T0, cfg)
    assert not p.add("e1", np.array([1, 0, 0], np.float32), (1, 1), 1.0, T0, cfg)  # replayed event
    p.decay_to(T0 + 100.0, cfg.half_life_s)
    assert p.weight == pytest.approx(0.5)
    assert p.prefix_share("1") == pytest.approx(1.0) and p.prefix_share("1/1") == pytest.approx(1.0)
    q = UserProfile.from_bytes(p.to_bytes())
    assert np.allclose(q.vector, p.vector) and q.prefixes == p.prefixes and q.events == ["e1"]


def test_corrupt_profile_names_the_problem():
    with pytest.raises(CorruptArtifact, match="profile"):
        UserProfile.from_bytes(b'{"format": "tandem.personal.profile/1", "dim": 4, "vector": "AAAA"}')


def test_memory_store_is_bounded_and_expires():
    now = [0.0]
    store = MemoryProfileStore(ProfileConfig(max_users=2, ttl_s=10.0), clock=lambda: now[0])
    for u in ("a", "b", "c"):
        store.put(u, UserProfile.empty(3))
    assert len(store) == 2 and store.get("a") is None
    now[0] = 11.0
    assert store.get("b") is None


def test_applier_builds_profiles_from_clicks_and_purchases_only():
    store = MemoryProfileStore()
    applier = ProfileApplier(store, _vectors())
    report = applier.apply([_click("a", T0), _click("b", T0 + 1, kind="purchase"),
                            _click("c", T0, kind="impression"), _click("zz", T0), _click("a", T0, user="")])
    assert (report.applied, report.stale) == (2, 3)
    assert applier.apply([_click("a", T0)]).duplicates == 1  # a redelivered batch changes nothing
    p = store.get("u1")
    assert p.prefix_share("2") > p.prefix_share("1") > 0  # a purchase outweighs a click


def test_reader_fails_open_when_redis_is_down():
    reader = ProfileReader(RedisProfileStore("redis://127.0.0.1:1/0", socket_timeout_s=0.01), _vectors())
    assert reader.scores("u1", ["a", "b"]) == {}
    assert reader.store.errors == 1
    with pytest.raises(InvalidInput, match="redis://"):
        RedisProfileStore("http://x")


def test_personal_fuser_reranks_only_with_a_profile():
    store = MemoryProfileStore()
    ProfileApplier(store, _vectors()).apply([_click("b", T0), _click("b", T0 + 1, rid="r2")])
    reader = ProfileReader(store, _vectors(), clock=lambda: T0 + 2)
    lists = [RankedList("bm25", [Hit("a", 3.0, "bm25"), Hit("a2", 2.0, "bm25"), Hit("b", 1.0, "bm25")])]
    fuser = PersonalFuser(RRF(), {"profile_sim": 1.0, "profile_prefix1": 1.0})
    assert [h.item_id for h in fuser.fuse(lists, 3, {})] == [h.item_id for h in RRF().fuse(lists, 3)]
    assert [h.item_id for h in fuser.fuse(lists, 3, reader.scores("nobody", ["a", "a2", "b"]))] == ["a", "a2", "b"]
    assert fuser.fuse(lists, 3, reader.scores("u1", ["a", "a2", "b"]))[0].item_id == "b"
    with pytest.raises(InvalidInput, match="unknown profile features"):
        PersonalFuser(RRF(), {"age": 1.0})


class _Fixed:
    """A source returning a, a2, b for every query."""

    name = "bm25"
    score_names: tuple[str, ...] = ()
    refreshable = False

    def retrieve(self, queries, k):
        return [[Hit("a", 3.0, "bm25"), Hit("a2", 2.0, "bm25"), Hit("b", 1.0, "bm25")][:k] for _ in queries]

    def version(self):
        return "fixed"


def test_searcher_personalises_known_users_only_and_survives_a_dead_store():
    from tandem.search import HybridSearcher, SearchRequest

    store = MemoryProfileStore()
    ProfileApplier(store, _vectors()).apply([_click("b", T0), _click("b", T0 + 1, rid="r2")])
    fuser = PersonalFuser(RRF(), {"profile_sim": 1.0, "profile_prefix1": 1.0})
    searcher = HybridSearcher([_Fixed()], fuser=fuser, personal=ProfileReader(store, _vectors(), clock=lambda: T0 + 2))

    def ids(user: str) -> list[str]:
        return [h.item_id for h in searcher.search(SearchRequest(query="drill", top_k=3, user_id=user)).hits]

    assert ids("") == ids("stranger") == ["a", "a2", "b"]
    assert ids("u1")[0] == "b"
    dead = HybridSearcher([_Fixed()], fuser=fuser, personal=ProfileReader(
        RedisProfileStore("redis://127.0.0.1:1/0", socket_timeout_s=0.01), _vectors()))
    result = dead.search(SearchRequest(query="drill", top_k=3, user_id="u1"))
    assert [h.item_id for h in result.hits] == ["a", "a2", "b"] and not result.degraded
    searcher.close()
    dead.close()


def test_rerank_scores_only_the_depth_and_names_a_bad_base():
    from tandem.fusion.base import FusedHit
    from tandem.personal.rerank import rerank

    fused = [FusedHit(i, s, ()) for i, s in (("a", 1.0), ("b", 0.9), ("c", 0.8), ("d", 0.1))]
    scores = {"b": {"profile_prefix1": 1.0}, "d": {"profile_prefix1": 1.0}}
    for base in ("logrank", "minmax"):
        assert [h.item_id for h in rerank(fused, scores, {"profile_prefix1": 2.0}, 3, base)] == ["b", "a", "c", "d"]
    assert [h.item_id for h in rerank(fused, scores, {"profile_prefix1": 5.0})] == ["b", "d", "a", "c"]
    with pytest.raises(InvalidInput, match="`base`"):
        PersonalFuser(RRF(), None, base="zscore")


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_profile_scores_match_their_definition(levels: int) -> None:
    """The vectorised read gives each candidate its cosine with the profile direction and the
    share of the profile's weight on its level-1 / level-2 ID prefix (prefix_share of prefix_keys)."""
    from tandem.personal.features import profile_scores
    from tandem.personal.profile import prefix_keys

    rng = np.random.default_rng(levels)
    n, dim = 300, 8
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    codes = rng.integers(0, 5, size=(n, levels))
    codes[:, 0] = rng.integers(0, 12, size=n)  # more top clusters than the profile keeps
    vectors = ItemVectors([f"i{k}" for k in range(n)], v, codes)
    config = ProfileConfig(prefix_levels=2, max_prefixes=6)  # fewer keys than prefixes seen: some candidates miss
    profile = UserProfile.empty(dim)
    for k in rng.choice(n, 40, replace=False):
        profile.add(f"e{k}", v[k], list(codes[k]), 1.0 + float(k % 3), T0 + float(k), config)
    ids = [f"i{k}" for k in range(0, n, 2)] + ["unknown"]
    got = profile_scores(profile, ids, vectors)
    assert set(got) == set(ids) - {"unknown"}
    unit = profile.vector / np.linalg.norm(profile.vector)
    for item, scores in got.items():
        k = int(item[1:])
        keys = prefix_keys(list(codes[k]), 2) + ["none"]
        assert scores["profile_sim"] == pytest.approx(float(v[k] @ unit), abs=1e-5)
        assert scores["profile_prefix1"] == pytest.approx(profile.prefix_share(keys[0]))
        assert scores["profile_prefix2"] == pytest.approx(profile.prefix_share(keys[1]) if levels > 1 else 0.0)
    assert any(s["profile_prefix1"] == 0.0 for s in got.values()) and any(s["profile_prefix1"] > 0 for s in got.values())
