"""Memorisation verification: exact/prefix-match counting against a model with known outputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from tandem.generative.tokenizer import train_tokenizer
from tandem.training.objectives import doc2id
from tandem.training.verify import verify_memorisation


class ScriptedModel(torch.nn.Module):
    """Predicts, at decoder position p of example i, the ID token of code ``script[i][p]``."""

    def __init__(self, tok, script: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.tok, self.script = tok, script
        self.calls = 0

    def forward(self, input_ids, attention_mask, decoder_input_ids):  # noqa: D102 - test double
        n, length = decoder_input_ids.shape
        logits = torch.zeros(n, length, len(self.tok))
        for i in range(n):
            row = self.script[self.calls + i]
            for p, c in enumerate(row):
                logits[i, p, int(self.tok.id_table[p, c])] = 5.0
            # A non-ID token scores highest everywhere: the per-position restriction must ignore it.
            logits[i, :, 7] = 50.0
        self.calls += n
        return SimpleNamespace(logits=logits)


def test_counts_exact_and_prefix_matches() -> None:
    tok = train_tokenizer(["drill hammer saw hose faucet"] * 3, 300, [3, 3, 4])
    gold = [(0, 1, 2), (1, 1, 0), (2, 0, 3), (2, 2, 1)]
    predicted = [(0, 1, 2), (1, 1, 1), (0, 0, 3), (2, 2, 1)]  # exact, depth 2, depth 0, exact
    examples = [doc2id(tok, [10, 11, tok.eos_id], g, i) for i, g in enumerate(gold)]
    model = ScriptedModel(tok, predicted)
    report = verify_memorisation(model, tok, examples, torch.device("cpu"), batch_size=3, autocast=False)
    assert report.exact_match == 0.5
    assert report.prefix_match == [0.75, 0.75, 0.5]
    assert np.isclose(report.mean_prefix_match, (3 + 2 + 0 + 3) / 12)
    assert report.failures == [1, 2]
    assert report.as_dict()["failures"] == 2
