"""The generative retriever's tokenizer: text pieces trained on the catalog, plus reserved tokens.

A from-scratch model needs a vocabulary that fits product text (model numbers, units,
brands), so a byte-level BPE is trained with ``tokenizers`` on catalog text and training
queries. Three kinds of reserved tokens are added on top, each a single token so that no
pre-tokenizer can ever split it:

* task prefixes (``<doc2id>``, ``<q2id>``, ``<id2q>``): one model serves every direction;
* T5 span-corruption sentinels (``<extra_id_N>``) for stage-1 denoising;
* one token per (position, code) of the semantic ID (``<id_P_C>``): the decoder emits an
  ID as a fixed-length sequence of these, and the prefix trie is built over their token ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tandem.errors import CorruptArtifact, InvalidInput

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
TASK_TOKENS: dict[str, str] = {"doc2id": "<doc2id>", "q2id": "<q2id>", "id2q": "<id2q>"}
#: How many span-corruption sentinels exist; a title rarely has more than a few spans.
NUM_SENTINELS = 32


def sentinel(i: int) -> str:
    """The ``i``-th span-corruption sentinel token (T5 naming)."""
    return f"<extra_id_{i}>"


def id_token(position: int, code: int) -> str:
    """The token that stands for ``code`` at ``position`` of a semantic ID."""
    return f"<id_{position}_{code}>"


class TandemTokenizer:
    """A ``PreTrainedTokenizerFast`` plus the lookup tables the retriever needs.

    ``id_space[p]`` is the number of codes position ``p`` of a semantic ID can take
    (including codes reserved for future items), so new items never need new tokens.
    """

    def __init__(self, hf_tokenizer: object, id_space: Sequence[int]) -> None:
        self.hf = hf_tokenizer
        self.id_space = tuple(int(n) for n in id_space)
        convert = hf_tokenizer.convert_tokens_to_ids  # type: ignore[attr-defined]
        self.pad_id: int = convert(PAD)
        self.eos_id: int = convert(EOS)
        self.task_ids: dict[str, int] = {task: convert(tok) for task, tok in TASK_TOKENS.items()}
        self.sentinel_ids: list[int] = [convert(sentinel(i)) for i in range(NUM_SENTINELS)]
        width = max(self.id_space)
        # -1 marks a code beyond this position's space; lookups of it are refused below.
        table = np.full((len(self.id_space), width), -1, dtype=np.int64)
        for p, n in enumerate(self.id_space):
            table[p, :n] = [convert(id_token(p, c)) for c in range(n)]
        if (table[table >= 0] == hf_tokenizer.unk_token_id).any():  # type: ignore[attr-defined]
            raise CorruptArtifact("tokenizer lacks some semantic-ID tokens; was it saved by Tandem?")
        self.id_table = table
        self._token_to_code = {int(t): (p, c) for p, row in enumerate(table) for c, t in enumerate(row) if t >= 0}

    def __len__(self) -> int:
        return len(self.hf)  # type: ignore[arg-type]

    @property
    def id_length(self) -> int:
        """Number of positions of a semantic ID (excluding the end-of-sequence token)."""
        return len(self.id_space)

    def encode_id(self, codes: Sequence[int]) -> list[int]:
        """Token ids of a semantic ID (without EOS); refuses codes outside the ID space."""
        if len(codes) != self.id_length:
            raise InvalidInput(f"`codes` must have {self.id_length} positions, got {len(codes)}")
        out = []
        for p, c in enumerate(codes):
            if not 0 <= c < self.id_space[p]:
                raise InvalidInput(f"`codes[{p}]` = {c} is outside the ID space (0..{self.id_space[p] - 1})")
            out.append(int(self.id_table[p, c]))
        return out

    def decode_id(self, token_ids: Sequence[int]) -> tuple[int, ...]:
        """Inverse of :meth:`encode_id`; raises ``KeyError`` for a token that is no ID token."""
        return tuple(self._token_to_code[int(t)][1] for t in token_ids)

    def encode_texts(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids of each text followed by EOS, truncated to ``max_length`` (EOS kept)."""
        if not texts:  # the fast tokenizer fails on an empty batch (memorisation-only runs have no queries)
            return []
        # split_special_tokens: user text spelling "<id_0_1>" or "</s>" must stay plain text.
        enc = self.hf(list(texts), add_special_tokens=False, split_special_tokens=True)  # type: ignore[operator]
        out = []
        for ids in enc["input_ids"]:
            out.append(list(ids[: max_length - 1]) + [self.eos_id])
        return out

    def save(self, directory: Path) -> None:
        """Write the Hugging Face tokenizer files into ``directory``."""
        self.hf.save_pretrained(str(directory))  # type: ignore[attr-defined]

    @classmethod
    def load(cls, directory: Path, id_space: Sequence[int]) -> TandemTokenizer:
        """Load tokenizer files written by :meth:`save` (JSON only, nothing unpickled)."""
        from transformers import PreTrainedTokenizerFast

        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise CorruptArtifact(f"`{directory}` has no tokenizer.json")
        hf = PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token=PAD, eos_token=EOS, unk_token=UNK)
        return cls(hf, id_space)


def reserved_tokens(id_space: Sequence[int]) -> list[str]:
    """Every reserved token in a fixed order: task prefixes, sentinels, then ID tokens."""
    tokens = list(TASK_TOKENS.values()) + [sentinel(i) for i in range(NUM_SENTINELS)]
    tokens += [id_token(p, c) for p, n in enumerate(id_space) for c in range(n)]
    return tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int, id_space: Sequence[int]) -> TandemTokenizer:
    """Train a lower-cased byte-level BPE on ``texts`` and add the reserved tokens.

    ``vocab_size`` counts the learned text pieces only; reserved tokens come on top, so the
    text vocabulary does not shrink when the ID space grows. Byte-level BPE never produces
    ``<unk>`` for text, which matters for model numbers and odd symbols in product titles.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise InvalidInput(f"`vocab_size` must be >= 300 (256 bytes + merges), got {vocab_size}")
    if not id_space or any(n < 1 for n in id_space):
        raise InvalidInput(f"`id_space` must list >= 1 code per position, got {list(id_space)}")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],  # ids 0, 1, 2: the T5 convention (pad doubles as decoder start)
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(reserved_tokens(id_space))
    tok.post_processor = TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    return TandemTokenizer(hf, id_space)
