"""The encoder stage of v2 training: LoRA on the pretrained encoder through ``peft``.

Section 5.1.3 adapts the pretrained model with parameter-efficient fine-tuning rather than
updating all of it. Here the encoder gets LoRA on its attention query/value projections
and trains, together with the decoder, on query→id with doc→id replay (the same full-softmax
loss as the cached stages). Texts are encoded live, so this is the expensive stage; it
runs within the run's time budget and the LoRA weights are merged at the end, so the
served encoder is a plain BERT again. The stage itself is declared and run by
:class:`tandem.training.tree_trainer.TreeTrainer`; these are its PEFT pieces, which stage 1
(:mod:`tandem.training.tree_adapt`) shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tandem.encoder import TextEncoder
    from tandem.training.tree_config import TreeTrainConfig
    from tandem.training.tree_data import Samples
    from tandem.training.tree_trainer import TreeTrainer

#: BERT attention projections that get LoRA (names inside ``BertSelfAttention``).
LORA_TARGETS = ["query", "value"]


def wrap_encoder(enc: TextEncoder, cfg: TreeTrainConfig) -> list[torch.nn.Parameter]:
    """Put LoRA (rank ``cfg.lora_rank``, alpha 2 × rank) on the encoder; returns the LoRA parameters."""
    from peft import LoraConfig, get_peft_model

    enc.model = get_peft_model(enc.model, LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                                     target_modules=LORA_TARGETS, lora_dropout=0.0))
    return [p for p in enc.model.parameters() if p.requires_grad]


def merge_encoder(enc: TextEncoder) -> None:
    """Fold the LoRA weights into the encoder, so the served encoder is a plain BERT again."""
    enc.model = enc.model.merge_and_unload().eval()


def live_loss(trainer: TreeTrainer, batch: Samples, path: torch.Tensor) -> torch.Tensor:
    """The full-softmax tree loss of ``batch`` with its texts encoded now (gradients reach LoRA)."""
    from tandem.generative.tree_model import tree_loss

    enc = trainer.encoder
    texts = {"query": trainer.queries.texts, "doc": trainer.docs.texts}[batch.source]
    ids, mask = enc.tokenize([texts[r] for r in batch.rows.tolist()])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enc.bf16 and enc.device.type == "cpu"):
        states = enc.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        q = enc.pool(states, mask)
        return tree_loss(trainer.model, trainer.index.tables(), q, states, mask, path,
                         beam=trainer.config.beam_negatives)
