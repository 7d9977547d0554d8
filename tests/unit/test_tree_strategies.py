"""v2 training strategies: query augmentation, curriculum and FGSM on cached states (off by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tandem.generative.tree_decoding import TreeIndex
from tandem.generative.tree_model import TreeDecoder, tree_loss
from tandem.training.tree_data import Samples
from tandem.training.tree_strategies import LEVEL, augmented_pairs, curriculum_parts, fgsm_tree_loss
from tandem_testing.tiny_catalog import tiny_catalog

PAIRS = [("cordless drill", "t01"), ("hammer drill", "t02"), ("paint roller", "t13"), ("lawn mower", "t20"),
         ("kitchen faucet", "t21"), ("wood screws", "t24")]


def test_augmented_pairs_are_seeded_rewrites_of_the_requested_share() -> None:
    pairs = [(f"query number {i} about item", f"i{i}") for i in range(200)]
    a = augmented_pairs(pairs, 0.25, seed=3)
    assert a == augmented_pairs(pairs, 0.25, seed=3)
    assert a != augmented_pairs(pairs, 0.25, seed=4)
    assert len(a) == 50  # no rewrite of these (several words, letters to edit) is a no-op
    originals = dict(pairs)
    by_item = {i: q for q, i in pairs}
    assert all(i in originals.values() and q != by_item[i] for q, i in a)
    assert len({i for _, i in a}) == 50  # drawn without replacement
    assert augmented_pairs(pairs, 0.0, seed=3) == [] and augmented_pairs([], 0.5, seed=3) == []


def test_augmented_pairs_drop_rewrites_equal_to_their_query() -> None:
    """A query without a character to edit rewrites to itself: dropped, so fewer than asked."""
    pairs = [("", "a"), ("  ", "b"), ("drill", "c"), ("saw blade", "d")]
    out = augmented_pairs(pairs, 0.99, seed=0)
    assert {i for _, i in out} == {"c", "d"} and all(q for q, _ in out)


def _part(source: str, n: int) -> Samples:
    return Samples(source, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64))


def test_curriculum_opens_one_level_per_epoch_and_all_in_the_last() -> None:
    parts = [_part("query", 4), _part("doc", 2), _part("aug", 3), _part("span", 5)]
    opened = [sorted(LEVEL[p.source] for p in curriculum_parts(parts, e, 5)) for e in range(5)]
    assert opened == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert [len(curriculum_parts(parts, e, 2)) for e in range(2)] == [1, 4]
    # a missing (or empty) level does not waste an epoch: no spans, no rewrites
    few = [_part("query", 4), _part("doc", 2), _part("span", 0)]
    assert [[p.source for p in curriculum_parts(few, e, 3) if len(p)] for e in range(3)] == [["doc"], ["query", "doc"],
                                                                                             ["query", "doc"]]
    assert curriculum_parts(few, 0, 1) == few


def _tiny_decoder(seed: int = 0) -> tuple[TreeDecoder, TreeIndex, torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor]:
    torch.manual_seed(seed)
    codes = np.array([[a, b, c] for a in range(2) for b in range(2) for c in range(3)])
    index = TreeIndex(codes)
    model = TreeDecoder(16, index.nodes_per_position)
    with torch.no_grad():  # a non-zero correction, so the states matter to the loss
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    mask = torch.ones(5, 6, dtype=torch.long)
    mask[1, 3:] = 0
    mask[4, 2:] = 0
    states = torch.randn(5, 6, 16) * mask.unsqueeze(-1)
    path = torch.from_numpy(index.paths[[0, 3, 5, 7, 11]])
    return model, index, q, states, mask, path


def _grads(model: TreeDecoder) -> list[torch.Tensor]:
    out = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


def test_fgsm_tree_loss_is_the_plain_loss_at_epsilon_zero() -> None:
    model, index, q, st, mk, path = _tiny_decoder()
    plain = tree_loss(model, index.tables(), q, st, mk, path, beam=4)
    same = fgsm_tree_loss(model, index.tables(), q, st, mk, path, beam=4, epsilon=0.0)
    assert torch.equal(plain, same)
    plain.backward()
    g_plain = _grads(model)
    same.backward()
    assert all(torch.equal(a, b) for a, b in zip(g_plain, _grads(model), strict=True))


def test_fgsm_tree_loss_averages_the_clean_and_a_relative_sign_step_loss() -> None:
    """``(L(x) + L(x + ε·rms(x)·sign ∇_x L)) / 2``; padding unperturbed; parameters get the
    gradient of exactly that average (∇_x does not reach them)."""
    model, index, q, st, mk, path = _tiny_decoder()
    tables, eps = index.tables(), 0.05
    clean = tree_loss(model, tables, q, st, mk, path, beam=4)
    got = fgsm_tree_loss(model, tables, q, st, mk, path, beam=4, epsilon=eps)
    assert float(got.detach()) > float(clean.detach())  # the sign step goes uphill
    got.backward()
    g_got = _grads(model)
    # reference, by hand
    st_, q_ = st.clone().requires_grad_(True), q.clone().requires_grad_(True)
    g_st, g_q = torch.autograd.grad(tree_loss(model, tables, q_, st_, mk, path, beam=4), [st_, q_])
    m = mk.unsqueeze(-1).float()
    rms_st = ((st.pow(2) * m).sum() / (m.sum() * st.shape[-1])).sqrt()
    adv_st = st + eps * rms_st * g_st.sign() * m
    adv_q = q + eps * q.pow(2).mean().sqrt() * g_q.sign()
    assert torch.equal(adv_st[1, 3:], st[1, 3:])
    model.zero_grad(set_to_none=True)
    want = (tree_loss(model, tables, q, st, mk, path, beam=4) + tree_loss(model, tables, adv_q, adv_st, mk, path,
                                                                          beam=4)) / 2
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    want.backward()
    for a, b in zip(g_got, _grads(model), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not st.requires_grad and not q.requires_grad  # the caller's tensors are left alone


def _train(tmp_path: Path, name: str, **overrides: Any) -> dict[str, Any]:
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    cfg = tree_profile("ci", adapt_epochs=0, memorise_epochs=1, align_epochs=3, batch_size=8, lora_batch_size=8,
                       **overrides)
    return train_tree(tiny_catalog(), PAIRS, tmp_path / name, cfg, cache_dir=tmp_path / "cache", echo=lambda _: None)


def test_tree_run_with_all_strategies_on_and_off(tmp_path: Path) -> None:
    items = len(tiny_catalog())
    off = _train(tmp_path, "off", lora_epochs=0)
    assert off["strategies"] == {"augment_share": 0.0, "augmented": 0, "curriculum": False, "fgsm_epsilon": 0.0,
                                 "fgsm_every": 4}
    q, replay = off["pairs"], off["config"]["replay"]
    n_replay = min(int(q * replay / (1 - replay)), items)
    assert off["stages"]["align"]["samples"] == 3 * (q + n_replay)  # as before: queries and replay, every epoch

    on = _train(tmp_path, "on", lora_epochs=1, augment_share=0.5, curriculum=True, fgsm_epsilon=0.05, fgsm_every=2)
    s = on["strategies"]
    assert s["augment_share"] == 0.5 and s["curriculum"] is True and s["fgsm_epsilon"] == 0.05
    aug, spans = s["augmented"], on["spans"]
    assert aug == len(augmented_pairs(PAIRS, 0.5, on["config"]["seed"])) == 3
    assert list(on["stages"]) == ["init", "memorise", "align", "encoder"]
    # align: replayed titles; + title spans; all (+ queries, + rewrites) in the last epoch
    assert on["stages"]["align"]["samples"] == 3 * n_replay + 2 * spans + q + aug
    assert on["stages"]["encoder"]["samples"] == q + n_replay + aug  # rewrites also in the encoder stage
    assert on["final_memorisation"]["items_checked"] == items
