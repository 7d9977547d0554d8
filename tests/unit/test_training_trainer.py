"""The staged trainer on a micro model: stages, bad input, checkpoints and exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tandem.errors import InvalidInput
from tandem_testing.model_fixtures import MICRO, tiny_id_map
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.training.config import StageLR, TrainConfig, profile_config
from tandem.training.loop import deadlines
from tandem.training.trainer import StagedTrainer

ITEMS = tiny_catalog()
PAIRS = [("cordless drill", "t01"), ("garden hose", "t18"), ("claw hammer", "t09")]
CONFIG = TrainConfig(
    profile="custom", size=MICRO, vocab_size=300, max_input_length=16, batch_size=32, threads=1,
    pretrain_epochs=1, memorise_max_epochs=2, exposures=2, progressive_epochs=1, memorise_target=1.0,
    memorise_lr=StageLR(ramp_steps=2), align_epochs=1,
)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def id_map() -> Any:
    return tiny_id_map(ITEMS)


def test_full_run_writes_model_summary_and_curve(id_map: Any, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    summary = StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, tmp_path, progress=False,
                            on_epoch=lambda r: seen.append((r["stage"], r["epoch"]))).run()
    assert seen == [("pretrain", 1), ("memorise", 1), ("memorise", 2), ("align", 1)]
    assert summary["stages"]["memorise"]["stop_reason"].startswith("target exact-match 1.0 not reached")
    assert not summary["memorisation_reached_target"]
    mem = summary["stages"]["memorise"]["memorisation"]
    assert 0.0 <= mem["exact_match"] <= mem["prefix_match"][0] <= 1.0
    # The first memorisation epoch trains only the easier items (progressive curriculum).
    epochs = summary["epochs"]
    assert epochs[1]["examples"] < epochs[2]["examples"] == 2 * len(ITEMS)
    # Alignment: a q2id and an id2q example per pair, plus one doc→id replay per item.
    assert epochs[3]["examples"] == 2 * len(PAIRS) + len(ITEMS)
    assert set(epochs[3]["task_loss"]) == {"q2id", "id2q", "doc2id"}
    assert (tmp_path / "training_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "training_summary.json").read_text())["items"] == 24
    assert (tmp_path / "manifest.json").is_file()


def test_resume_continues_exactly(id_map: Any, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, straight, progress=False).run()

    broken = tmp_path / "broken"

    def stop_after_first_memorise_epoch(record: dict[str, Any]) -> None:
        if record["stage"] == "memorise":
            raise Interrupt

    with pytest.raises(Interrupt):
        StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, broken, progress=False,
                      on_epoch=stop_after_first_memorise_epoch).run()
    assert not (broken / "manifest.json").exists()
    summary = StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, broken, progress=False).run(resume=True)
    assert [e["stage"] for e in summary["epochs"]] == ["pretrain", "memorise", "memorise", "align"]
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-5, key


def test_resume_with_another_config_is_refused(id_map: Any, tmp_path: Path) -> None:
    StagedTrainer(CONFIG.model_copy(update={"align_epochs": 0, "memorise_max_epochs": 1}), ITEMS, id_map, PAIRS,
                  tmp_path, progress=False).run()
    with pytest.raises(InvalidInput, match="`resume`"):
        StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, tmp_path, progress=False).run(resume=True)


def test_catalog_item_without_an_id_is_refused(id_map: Any, tmp_path: Path) -> None:
    from tandem.catalog.item import Item

    stranger = Item(item_id="not-in-map", title="Mystery Widget")
    with pytest.raises(InvalidInput, match="`not-in-map` has no semantic ID"):
        StagedTrainer(CONFIG, [*ITEMS, stranger], id_map, PAIRS, tmp_path)
    with pytest.raises(InvalidInput, match="`catalog` is empty"):
        StagedTrainer(CONFIG, [], id_map, PAIRS, tmp_path)


def test_profiles() -> None:
    ci, full = profile_config("ci"), profile_config("full", seed=3)
    assert ci.size.d_model < full.size.d_model and full.seed == 3
    assert ci.pseudo_queries == full.pseudo_queries == 4  # the measured default recipe
    assert profile_config("ci", pseudo_queries=0).pseudo_queries == 0
    with pytest.raises(InvalidInput, match="`profile`"):
        profile_config("huge")


def test_pretrained_start_skips_denoising_and_refuses_pickles(id_map: Any, tmp_path: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    from tandem.errors import CorruptArtifact

    src = tmp_path / "pretrained"
    T5ForConditionalGeneration(T5Config(vocab_size=500, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                        num_decoder_layers=1, num_heads=2)).save_pretrained(str(src))
    config = CONFIG.model_copy(update={"memorise_max_epochs": 1, "align_epochs": 0})
    summary = StagedTrainer(config, ITEMS, id_map, PAIRS, tmp_path / "out", pretrained=src, progress=False).run()
    assert list(summary["stages"]) == ["memorise"]
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CorruptArtifact, match="pickle"):
        StagedTrainer(config, ITEMS, id_map, PAIRS, tmp_path / "out2", pretrained=src, progress=False).run()


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda_with_bf16(id_map: Any, tmp_path: Path) -> None:
    summary = StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, tmp_path, device="cuda", progress=False).run()
    assert summary["device"].startswith("cuda") and summary["bf16_autocast"]
    assert summary["peak_gpu_mb"] > 0


def test_every_strategy_switch_trains_and_is_recorded(id_map: Any, tmp_path: Path) -> None:
    pairs = [*PAIRS, ("drill", "t02"), ("drill", "t01")]
    bm25 = {"cordless drill": ["t02", "t01", "t05"], "drill": ["t01", "t03", "t02", "t04"]}
    config = CONFIG.model_copy(update={"pretrain_epochs": 0, "memorise_max_epochs": 1, "align_epochs": 2})
    config = TrainConfig.model_validate({
        **config.model_dump(), "pseudo_queries": 2, "id2q_round": True, "id2q_per_item": 2, "round_trip_k": 24,
        "rank_loss": "contrastive", "hard_negatives": 2, "random_negatives": 2, "in_batch_negatives": True,
        "curriculum": True, "adaptive_alpha": 1.0, "augment_share": 0.25, "fgsm_epsilon": 0.01, "fgsm_every": 1,
        "grad_norm_weight": 0.1})
    summary = StagedTrainer(config, ITEMS, id_map, pairs, tmp_path, progress=False, bm25_run=bm25).run()
    stages = [e["stage"] for e in summary["epochs"]]
    assert stages == ["memorise", "align", "align", "id2q_round"]
    strat = summary["strategies"]
    assert strat["q2id_pairs"] == {"exact": 24, "template": 48, "real": len(pairs)}
    assert strat["hard_negative_queries"] == 2  # "drill" and "cordless drill" have BM25 non-positives
    # round_trip_k covers the catalog, so every new generated query round-trips.
    assert strat["id2q_round"]["kept"] == strat["id2q_round"]["new"] > 0
    first, last, rnd = summary["epochs"][1:]
    # Curriculum: the first alignment epoch trains only exact-match (title) queries; adaptive
    # sampling keeps the count; id→query and doc→id replay come on top.
    assert first["examples"] == 24 + len(pairs) + len(ITEMS)
    assert "augmented" in first and first["augmented"] == int(0.25 * len(ITEMS))  # replay only: no level 3 yet
    assert last["augmented"] == int(0.25 * (24 + 48 + len(pairs))) + int(0.25 * len(ITEMS))
    assert rnd["examples"] > last["examples"]  # the generated queries joined
    for key in ("q2id", "rank_hard", "rank_random", "rank_in_batch", "adversarial", "grad_norm"):
        assert key in last["task_loss"], key
    assert (tmp_path / "manifest.json").is_file()


def test_strategy_config_is_validated() -> None:
    # pydantic wraps the validator's InvalidInput in a ValidationError (a ValueError).
    with pytest.raises(ValueError, match="`rank_loss` needs negatives"):
        TrainConfig(rank_loss="margin")
    with pytest.raises(ValueError, match="`rank_loss` is `none`"):
        TrainConfig(random_negatives=3)
    assert not TrainConfig().pseudo_queries and TrainConfig().rank_loss == "none"  # all off by default


def test_prepared_pseudo_queries_replace_the_templates(id_map: Any, tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"pseudo_queries": 2})
    given = {ITEMS[0].item_id: ["prepared query one", "prepared query two", "over the cap"]}
    trainer = StagedTrainer(config, ITEMS, id_map, PAIRS, tmp_path, progress=False, pseudo=given)
    trainer._build(None)
    texts = set(trainer.data.groups.index)
    assert {"prepared query one", "prepared query two"} <= texts and "over the cap" not in texts


def test_time_budget_ends_stages_at_their_deadlines(id_map: Any, tmp_path: Path) -> None:
    """A spent budget stops each stage where its share ends: a truncated epoch, a recorded reason."""
    cfg = CONFIG.model_copy(update={"time_budget_minutes": 1e-6, "memorise_max_epochs": 5, "align_epochs": 3})
    summary = StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False).run()
    pretrain = summary["epochs"][0]
    assert pretrain["stage"] == "pretrain" and pretrain["truncated"].startswith("time budget: ")
    for stage in ("memorise", "align"):
        assert summary["stages"].get(stage, {}).get("epochs", 0) <= 1
    reasons = [summary["stages"][s]["stop_reason"] for s in summary["stages"]]
    assert all("time budget" in r for r in reasons), reasons
    assert (tmp_path / "manifest.json").is_file()  # a budgeted run still writes a usable model


def test_budget_deadlines_are_cumulative_shares_of_the_stages_that_run(id_map: Any, tmp_path: Path) -> None:
    cfg = CONFIG.model_copy(update={"time_budget_minutes": 10.0})
    stages = StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False).stages()
    # pretrain 0.1, memorise 0.4, align 0.4 (no id→query round): renormalised over 0.9.
    due = deadlines(stages, 600.0)
    assert due["pretrain"] == pytest.approx(600 * 0.1 / 0.9)
    assert due["memorise"] == pytest.approx(600 * 0.5 / 0.9)
    assert due["align"] == pytest.approx(600.0)
    pretrained = StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False, pretrained=tmp_path).stages()
    assert deadlines(pretrained, 600.0)["memorise"] == pytest.approx(600 * 0.5)  # pretrained start: no stage 1
    assert deadlines(StagedTrainer(CONFIG, ITEMS, id_map, PAIRS, tmp_path, progress=False).stages(),
                     None)["align"] is None
    with pytest.raises(ValueError, match="budget_shares"):
        TrainConfig(budget_shares={"pretrain": 1.0, "decode": 1.0})


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_stage_3_through_peft_merges_each_epoch_into_plain_weights(id_map: Any, tmp_path: Path, method: str) -> None:
    cfg = CONFIG.model_copy(update={"align_peft": method, "align_epochs": 2, "fgsm_epsilon": 0.01,
                                    "rank_loss": "margin", "in_batch_negatives": True})
    trainer = StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False)
    summary = trainer.run()
    aligned = [r for r in summary["epochs"] if r["stage"] == "align"]
    assert len(aligned) == 2 and all(r["peft"]["method"] == method for r in aligned)
    peft = summary["strategies"]["align_peft"]
    assert 0 < peft["trainable"] < peft["total"] / 2  # micro model: rank 16 is a large share
    assert set(aligned[-1]["task_loss"]) >= {"q2id", "adversarial", "rank_in_batch"}
    # Merged: the saved model is a plain T5 (no adapter tensors).
    saved = load_file(str(next(tmp_path.glob("*.safetensors"))))
    assert not any("lora_" in k or "ia3_" in k for k in saved)
    assert type(trainer.model).__name__ == "T5ForConditionalGeneration"


def test_peft_stage_3_resumes_after_an_interrupt(id_map: Any, tmp_path: Path) -> None:
    cfg = CONFIG.model_copy(update={"align_peft": "lora", "align_epochs": 2})

    def stop_after_first_align(record: dict[str, Any]) -> None:
        if record["stage"] == "align":
            raise Interrupt

    with pytest.raises(Interrupt):
        StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False, on_epoch=stop_after_first_align).run()
    summary = StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False).run(resume=True)
    assert [r["stage"] for r in summary["epochs"]].count("align") == 2


def test_epoch_checks_a_sample_and_the_final_check_covers_every_item(id_map: Any, tmp_path: Path) -> None:
    cfg = CONFIG.model_copy(update={"check_items": 5, "align_epochs": 1})
    summary = StagedTrainer(cfg, ITEMS, id_map, PAIRS, tmp_path, progress=False).run()
    mem = [r["memorisation"] for r in summary["epochs"] if "memorisation" in r]
    # Per epoch: 5 checked items (exact-match in fifths, at most 5 failures).
    assert mem and all(m["failures"] <= 5 and round(m["exact_match"] * 5, 6).is_integer() for m in mem)
    final = summary["final_memorisation"]
    assert summary["checked_items_per_epoch"] == 5 and "seconds" in final
    # The final check covers all 24 items: failures + exact matches add up to the catalog.
    assert final["failures"] + round(final["exact_match"] * len(ITEMS)) == len(ITEMS)
    assert final["failures"] > 5  # a micro model in 3 epochs memorises few: only a whole check sees > 5


def test_cli_summary_when_the_budget_ended_before_stage_2(id_map: Any, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`tandem train generative` prints its table and says why, when stage 2 never ran."""
    from tandem_app.cli.train import _print_summary

    summary = StagedTrainer(CONFIG.model_copy(update={"time_budget_minutes": 1e-6}), ITEMS, id_map, PAIRS,
                            tmp_path, progress=False).run()
    summary["stages"].pop("memorise", None)  # as when the budget ends inside stage 1
    _print_summary(summary, tmp_path)
    assert "stage 2 never ran" in capsys.readouterr().out
