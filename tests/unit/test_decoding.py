"""Constrained beam search against brute-force scoring with the model itself."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import T5Config, T5ForConditionalGeneration

from tandem.errors import InvalidInput
from tandem.generative.decoding import beam_search_tensors, constrained_beam_search
from tandem.ids.trie import PrefixTrie

VOCAB = 48
EOS = 1


@pytest.fixture(scope="module")
def model() -> Iterator[T5ForConditionalGeneration]:
    # A tiny model: one thread is faster than two here, and far steadier on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                   d_kv=16, decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS, dropout_rate=0.0)
    m = T5ForConditionalGeneration(cfg).eval()
    # Random init gives near-uniform logits; sharpen them so rankings are decisive.
    with torch.no_grad():
        m.lm_head.weight.mul_(8.0)
    yield m
    torch.set_num_threads(threads)


def brute_force(model: T5ForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor,
                seqs: np.ndarray, normalize: str) -> torch.Tensor:
    """Score every sequence for every query with one teacher-forced forward pass."""
    n, length = seqs.shape
    labels = torch.as_tensor(seqs)
    dec_in = torch.cat([torch.zeros(n, 1, dtype=torch.long), labels[:, :-1]], dim=1)
    out = []
    with torch.no_grad():
        for q in range(ids.shape[0]):
            logits = model(input_ids=ids[q : q + 1].expand(n, -1), attention_mask=mask[q : q + 1].expand(n, -1),
                           decoder_input_ids=dec_in).logits
            if normalize == "full":
                lp = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
            else:
                lp = torch.zeros(n)
                for d in range(length):
                    voc = torch.as_tensor(np.unique(seqs[:, d]))
                    pos = torch.searchsorted(voc, labels[:, d].contiguous())
                    lp += logits[:, d, voc].log_softmax(-1).gather(-1, pos.unsqueeze(-1)).squeeze(-1)
            out.append(lp)
    return torch.stack(out)


def queries(seed: int, batch: int = 3, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2 :] = 0  # one padded query: the mask must be honoured
    return ids, mask


id_sets = st.lists(st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(10, 20)),
                   min_size=1, max_size=24, unique=True)


@given(rows=id_sets, seed=st.integers(0, 1000), normalize=st.sampled_from(["full", "level"]),
       with_eos=st.booleans())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_exhaustive_beam_equals_brute_force(model: T5ForConditionalGeneration, rows: list[tuple[int, ...]],
                                            seed: int, normalize: str, with_eos: bool) -> None:
    seqs = np.array(rows, dtype=np.int64)
    if with_eos:
        seqs = np.concatenate([seqs, np.full((len(seqs), 1), EOS)], axis=1)
    trie = PrefixTrie.from_sequences(seqs)
    ids, mask = queries(seed)
    k = min(5, len(seqs))
    # num_beams >= number of IDs: nothing is ever pruned, so the search must be exact.
    res = constrained_beam_search(model, (ids, mask), trie, num_beams=len(seqs), num_return=k,
                                  normalize=normalize)  # type: ignore[arg-type]
    expect = brute_force(model, ids, mask, seqs, normalize)
    for q, hits in enumerate(res):
        assert len(hits) == k
        top = torch.topk(expect[q], k)
        np.testing.assert_allclose([h.logprob for h in hits], top.values.numpy(), rtol=0, atol=1e-4)
        # Each hit is scored as the model scores it, and together they hold the top-k
        # values: so they are a top-k set (any order among exact ties).
        assert len({h.leaf for h in hits}) == k
        for h in hits:
            assert tuple(seqs[h.leaf].tolist()) == h.tokens
            assert abs(float(expect[q, h.leaf]) - h.logprob) < 1e-4


@given(rows=st.lists(st.tuples(st.integers(2, 30), st.integers(2, 30), st.integers(2, 30)),
                     min_size=1, max_size=60, unique=True),
       beams=st.integers(1, 8), seed=st.integers(0, 1000))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_results_valid_sorted_and_scored_by_model(model: T5ForConditionalGeneration,
                                                  rows: list[tuple[int, ...]], beams: int, seed: int) -> None:
    seqs = np.array(rows, dtype=np.int64)
    trie = PrefixTrie.from_sequences(seqs)
    ids, mask = queries(seed)
    res = constrained_beam_search(model, (ids, mask), trie, num_beams=beams)
    expect = brute_force(model, ids, mask, seqs, "full")
    for q, hits in enumerate(res):
        assert len(hits) == min(beams, len(seqs))
        scores = [h.logprob for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in hits}) == len(hits)
        for h in hits:
            assert trie.leaf(h.tokens) == h.leaf
            assert abs(float(expect[q, h.leaf]) - h.logprob) < 1e-4


@given(rows=id_sets, extra=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(10, 20)),
       seed=st.integers(0, 1000))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_id_inserted_after_build_is_reachable(model: T5ForConditionalGeneration, rows: list[tuple[int, ...]],
                                              extra: tuple[int, ...], seed: int) -> None:
    rows = [r for r in rows if r != extra]
    trie = PrefixTrie.from_sequences(np.array(rows, dtype=np.int64).reshape(len(rows), 3))
    trie.device_view("cpu")  # a cached device view must be refreshed by the insert
    leaf = trie.insert(extra)
    ids, mask = queries(seed)
    res = constrained_beam_search(model, (ids, mask), trie, num_beams=len(trie))
    expect = brute_force(model, ids, mask, np.array([*rows, extra], dtype=np.int64), "full")
    for q, hits in enumerate(res):
        found = [h for h in hits if h.tokens == extra]
        assert len(found) == 1 and found[0].leaf == leaf
        assert abs(found[0].logprob - float(expect[q, leaf])) < 1e-4


def test_inserted_id_is_reachable(model: T5ForConditionalGeneration) -> None:
    rng = np.random.default_rng(3)
    seqs = np.unique(rng.integers(2, 12, size=(30, 3)), axis=0)
    trie = PrefixTrie.from_sequences(seqs)
    ids, mask = queries(7)
    # Pick a query's best sequence outside the trie, insert it, and it must come first.
    everything = np.array([[a, b, c] for a in range(2, 14) for b in range(2, 14) for c in range(2, 14)])
    scores = brute_force(model, ids[1:2], mask[1:2], everything, "full")[0]
    present = {tuple(s) for s in seqs.tolist()}
    best = next(tuple(everything[i].tolist()) for i in scores.argsort(descending=True).tolist()
                if tuple(everything[i].tolist()) not in present)
    before = constrained_beam_search(model, (ids, mask), trie, num_beams=4)
    assert all(h.tokens != best for hits in before for h in hits)
    leaf = trie.insert(best)
    after = constrained_beam_search(model, (ids, mask), trie, num_beams=len(trie))
    assert after[1][0].tokens == best and after[1][0].leaf == leaf


def test_batch_results_equal_single_query_results(model: T5ForConditionalGeneration) -> None:
    rng = np.random.default_rng(5)
    seqs = np.unique(rng.integers(2, 20, size=(80, 3)), axis=0)
    trie = PrefixTrie.from_sequences(seqs)
    ids, mask = queries(11, batch=4)
    batched = constrained_beam_search(model, (ids, mask), trie, num_beams=6, num_return=3)
    for q in range(4):
        alone = constrained_beam_search(model, (ids[q : q + 1], mask[q : q + 1]), trie, num_beams=6, num_return=3)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batched[q]]
        np.testing.assert_allclose([h.logprob for h in alone[0]], [h.logprob for h in batched[q]], atol=1e-5)


def test_fewer_ids_than_beams_and_empty_trie(model: T5ForConditionalGeneration) -> None:
    ids, mask = queries(0)
    trie = PrefixTrie.from_sequences([[3, 4, 5], [3, 4, 6]])
    res = constrained_beam_search(model, (ids, mask), trie, num_beams=5)
    assert all(sorted(h.tokens for h in hits) == [(3, 4, 5), (3, 4, 6)] for hits in res)
    empty = PrefixTrie.from_sequences(np.zeros((0, 3), np.int64))
    assert constrained_beam_search(model, (ids, mask), empty, num_beams=3) == [[], [], []]


def test_unconstrained_mode_searches_the_level_vocabulary(model: T5ForConditionalGeneration) -> None:
    seqs = np.array([[2, 3, 4], [5, 6, 7]])
    trie = PrefixTrie.from_sequences(seqs)
    ids, mask = queries(2)
    tokens, scores, leaves = beam_search_tensors(model, ids, mask, trie, 4, constrained=False)
    assert tokens.shape == (3, 4, 3) and (leaves == -1).all()
    for d in range(3):
        assert set(tokens[..., d].flatten().tolist()) <= set(seqs[:, d].tolist())
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("kwargs, msg", [
    ({"num_beams": 0}, "`num_beams`"),
    ({"num_beams": 2, "num_return": 3}, "`num_return`"),
    ({"num_beams": 2, "normalize": "softmax"}, "`normalize`"),
])
def test_bad_arguments(model: T5ForConditionalGeneration, kwargs: dict[str, object], msg: str) -> None:
    trie = PrefixTrie.from_sequences([[3, 4, 5]])
    ids, mask = queries(0)
    with pytest.raises(InvalidInput, match=msg):
        constrained_beam_search(model, (ids, mask), trie, **kwargs)  # type: ignore[arg-type]


def test_bad_encoder_inputs(model: T5ForConditionalGeneration) -> None:
    trie = PrefixTrie.from_sequences([[3, 4, 5]])
    with pytest.raises(InvalidInput, match="`input_ids`"):
        constrained_beam_search(model, (torch.tensor([1, 2, 3]), None), trie, num_beams=1)
    with pytest.raises(InvalidInput, match="`attention_mask`"):
        constrained_beam_search(model, (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4)), trie, num_beams=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model: T5ForConditionalGeneration) -> None:
    rng = np.random.default_rng(9)
    seqs = np.unique(rng.integers(2, 30, size=(200, 3)), axis=0)
    trie = PrefixTrie.from_sequences(seqs)
    ids, mask = queries(4)
    cpu = constrained_beam_search(model, (ids, mask), trie, num_beams=8)
    gpu_model = T5ForConditionalGeneration(model.config).eval().cuda()
    gpu_model.load_state_dict(model.state_dict())
    gpu = constrained_beam_search(gpu_model, (ids.cuda(), mask.cuda()), trie, num_beams=8)
    for a, b in zip(cpu, gpu, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        np.testing.assert_allclose([h.logprob for h in a], [h.logprob for h in b], atol=1e-3)
