"""Memorisation verification: can the model write each item's ID from the item's text?

Measured as greedy decoding of doc→id restricted, at each position, to that position's ID
tokens. It is computed in one teacher-forced forward pass: the greedy path agrees with the
gold ID up to the first position where the argmax (given the gold prefix) is wrong, so the
number of leading correct argmaxes *is* the length of the correct prefix greedy decoding
would produce. Exact-match is therefore the greedy exact-match; prefix trie constraints can
only turn more items into exact matches (the gold ID is always in the trie), so this is a
lower bound on trie-constrained greedy exact-match, at the cost of one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tandem.training.data import collate
from tandem.training.objectives import Example

if TYPE_CHECKING:
    import torch

    from tandem.generative.tokenizer import TandemTokenizer


@dataclass(frozen=True)
class MemorisationReport:
    """Exact-match rate, prefix-match rate per depth, and the items not yet memorised."""

    exact_match: float
    prefix_match: list[float]
    """``prefix_match[d]``: share of items whose first ``d + 1`` ID positions are right."""
    mean_prefix_match: float
    """Mean share of the ID written correctly before the first error (the prefix-match rate)."""
    failures: list[int]
    """Item indices whose ID is not reproduced exactly."""

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (failures counted, not listed)."""
        return {
            "exact_match": round(self.exact_match, 4),
            "prefix_match": [round(x, 4) for x in self.prefix_match],
            "mean_prefix_match": round(self.mean_prefix_match, 4),
            "failures": len(self.failures),
        }


def verify_memorisation(
    model: torch.nn.Module,
    tokenizer: TandemTokenizer,
    examples: Sequence[Example],
    device: torch.device,
    batch_size: int = 256,
    autocast: bool = True,
) -> MemorisationReport:
    """Run the check over doc→id ``examples`` (one per item) and summarise it."""
    import torch

    length = tokenizer.id_length
    allowed = torch.as_tensor(tokenizer.id_table, device=device)  # [length, width], -1 = unused
    cand = allowed.clamp(min=0)
    correct_depth = np.zeros(len(examples), dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                batch = collate(chunk, tokenizer.pad_id, device)
                logits = model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    decoder_input_ids=batch["decoder_input_ids"][:, :length],
                ).logits.float()
                # Restrict position p to its own ID tokens, then take the argmax there.
                scores = torch.gather(logits, 2, cand.unsqueeze(0).expand(len(chunk), -1, -1))
                scores = scores.masked_fill(allowed.unsqueeze(0) < 0, float("-inf"))
                pred = torch.gather(cand.unsqueeze(0).expand(len(chunk), -1, -1), 2, scores.argmax(2, keepdim=True))
                ok = (pred.squeeze(2) == batch["labels"][:, :length]).long()
                # cumprod turns "right at p" into "right at every position up to p".
                correct_depth[start : start + len(chunk)] = ok.cumprod(1).sum(1).cpu().numpy()
    finally:
        model.train(was_training)
    n = max(len(examples), 1)
    prefix = [float((correct_depth >= d + 1).sum() / n) for d in range(length)]
    return MemorisationReport(
        exact_match=prefix[-1] if examples else 0.0,
        prefix_match=prefix,
        mean_prefix_match=float(correct_depth.mean() / length) if examples else 0.0,
        failures=[e.item for e, d in zip(examples, correct_depth, strict=True) if d < length],
    )
