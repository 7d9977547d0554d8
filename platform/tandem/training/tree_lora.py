"""The encoder stage of v2 training: LoRA on the pretrained encoder through ``peft``.

Section 5.1.3 adapts the pretrained model with parameter-efficient fine-tuning rather than
updating all of it. Here the encoder gets LoRA on its attention query/value projections
and trains, together with the decoder, on query→id with doc→id replay (the same full-softmax
loss as the cached stages). Texts are encoded live, so this is the expensive stage; it
runs within the run's time budget and the LoRA weights are merged at the end, so the
served encoder is a plain BERT again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tandem.training.tree_data import batches

if TYPE_CHECKING:
    from tandem.training.tree_config import TreeTrainConfig
    from tandem.training.tree_trainer import TreeTrainer

#: BERT attention projections that get LoRA (names inside ``BertSelfAttention``).
LORA_TARGETS = ["query", "value"]


def lora_stage(trainer: TreeTrainer, cfg: TreeTrainConfig) -> dict[str, Any]:
    """Train LoRA + decoder for ``cfg.lora_epochs`` (or until the budget); merge; return stage stats."""
    from peft import LoraConfig, get_peft_model

    enc = trainer.encoder
    peft_model = get_peft_model(enc.model, LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                                      target_modules=LORA_TARGETS, lora_dropout=0.0))
    enc.model = peft_model
    lora_params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = trainer._optimizer(lora_params, cfg.lora_lr)  # noqa: SLF001 - the stage belongs to the trainer
    n_replay = int(len(trainer.query_samples) * cfg.replay / (1 - cfg.replay))
    parts = [trainer.query_samples, trainer.doc_samples.subsample(n_replay, trainer.np_rng)]
    texts = {"query": trainer.queries.texts, "doc": trainer.docs.texts}
    t0, losses, seen, stop = time.monotonic(), [], 0, "epochs done"
    epoch = 0
    for epoch in range(cfg.lora_epochs):
        peft_model.eval()  # no dropout: the cached stages saw dropout-free states, LoRA still gets gradients
        trainer.model.train()
        for batch, _ in batches(parts, cfg.lora_batch_size, trainer.np_rng):
            ids, mask = enc.tokenize([texts[batch.source][r] for r in batch.rows.tolist()])
            path = torch.from_numpy(trainer.index.paths[batch.items])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enc.bf16 and enc.device.type == "cpu"):
                states = enc.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                q = enc.pool(states, mask)
                loss = _loss(trainer, q, states, mask, path)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*trainer.model.parameters(), *lora_params], 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            seen += len(batch)
            if trainer._over_budget():  # noqa: SLF001
                stop = f"time budget reached in epoch {epoch + 1}"
                break
        if trainer._over_budget():  # noqa: SLF001
            break
    enc.model = peft_model.merge_and_unload().eval()
    seconds = time.monotonic() - t0
    return {"epochs": epoch + 1, "seconds": seconds, "final_loss": float(np.mean(losses[-50:])) if losses else 0.0,
            "samples": seen, "samples_per_s": seen / max(seconds, 1e-9), "stop_reason": stop,
            "lora_rank": cfg.lora_rank, "lora_parameters": sum(p.numel() for p in lora_params)}


def _loss(trainer: TreeTrainer, q: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
          path: torch.Tensor) -> torch.Tensor:
    from tandem.generative.tree_model import tree_loss

    return tree_loss(trainer.model, trainer.index.tables(), q, states, mask, path, beam=trainer.config.beam_negatives)
