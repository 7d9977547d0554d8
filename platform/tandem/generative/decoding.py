"""Vectorised trie-constrained beam search for T5-style encoder-decoder models.

One call decodes a batch of queries. Per step, for all beams of all queries at once:
the trie states ``[batch, beams]`` index the device-resident transition tables
(:class:`tandem.ids.trie.DeviceTrie`) to get every beam's candidate tokens ``[batch,
beams, K]``; the decoder (KV cache reused, encoder run once) scores them; one ``topk``
per query picks the next beams. No Python runs per beam or per step-row, and nothing
leaves the device until the final results.

Work per step is kept small on purpose:

* step 0 runs one decoder row per query (all beams are identical there), later steps
  ``num_beams`` rows;
* with ``normalize="level"`` the output projection covers only ``vocab[d]``, the tokens
  that occur at position ``d`` of some ID (tens to hundreds of rows of the embedding
  matrix instead of the whole vocabulary), and trailing positions with a single possible
  token (e.g. EOS) need no decoder step at all (their log-probability is exactly 0).

Normalisation, precisely. Let ``z`` be the model's logits (computed exactly as
``T5ForConditionalGeneration.forward`` does, including the ``d_model ** -0.5`` rescale):

* ``"full"`` scores a step as ``z[y] - logsumexp(z over the whole vocabulary)``: the
  model's own log-probability; the sequence score is ``log p(id | query)``.
* ``"level"`` scores it as ``z[y] - logsumexp(z over vocab[d])``: the log-probability
  under the model's distribution restricted to position ``d``'s ID tokens. The two differ
  per step by ``log P(vocab[d] | prefix)``. A retriever trained on doc→id / query→id
  puts (almost) all mass on ID tokens at ID positions, so that term is ~0 and the
  rankings agree; in general ``"level"`` ranks exactly as a model whose output layer has
  only the ID tokens of each position — the same ranking the full model gives whenever
  ``P(vocab[d] | prefix)`` is equal across the compared prefixes. Use ``"full"`` when the
  scores must be the model's log-probs (calibration, fusion on raw scores).

Beam search is exact when ``num_beams`` is at least the number of nodes at every depth
(then no prefix is ever pruned); otherwise it is the usual approximation.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import torch
import torch.nn.functional as F

from tandem.errors import InvalidInput

if TYPE_CHECKING:
    from transformers import EncoderDecoderCache

    from tandem.ids.trie import DeviceTrie, PrefixTrie

Normalize = Literal["full", "level"]


class DecodedId(NamedTuple):
    """One decoded identifier: its token ids, sequence log-probability and trie leaf value."""

    tokens: tuple[int, ...]
    logprob: float
    leaf: int


class _T5Head:
    """Runs a T5-style decoder one step and projects onto any subset of the vocabulary.

    Replicates ``T5ForConditionalGeneration.forward``: decoder → optional
    ``d_model ** -0.5`` scaling (``config.scale_decoder_outputs``, or
    ``tie_word_embeddings`` on transformers versions without that flag) → ``lm_head``.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        for attr in ("decoder", "lm_head", "get_encoder", "config"):
            if not hasattr(model, attr):
                raise InvalidInput(f"`model` must be a T5-style encoder-decoder (missing `{attr}`)")
        # a T5-style duck (the attributes are checked above): torch types its submodules
        # ``Tensor | Module``, so they are reached through ``Any``
        self.model: Any = cast(Any, model)
        cfg = self.model.config
        scale = getattr(cfg, "scale_decoder_outputs", None)
        if scale is None:
            scale = bool(getattr(cfg, "tie_word_embeddings", False))
        self.scale = float(cfg.d_model) ** -0.5 if scale else 1.0
        self.weight: torch.Tensor = self.model.lm_head.weight
        self.bias: torch.Tensor | None = getattr(self.model.lm_head, "bias", None)
        # transformers 5.x renamed the decoder's ``past_key_values`` to ``cache``.
        params = inspect.signature(self.model.decoder.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        start = getattr(cfg, "decoder_start_token_id", None)
        if start is None:
            start = cfg.pad_token_id
        self.start_token = int(start)

    def hidden(self, tokens: torch.Tensor, enc: torch.Tensor, enc_mask: torch.Tensor, cache: object) -> torch.Tensor:
        out = self.model.decoder(
            input_ids=tokens, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
            use_cache=True, **{self.cache_kw: cache},
        )
        h = out.last_hidden_state[:, -1]
        return h * self.scale if self.scale != 1.0 else h

    def logits(self, h: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """Logits over the whole vocabulary (``rows=None``) or over ``rows`` only."""
        if rows is None:
            return self.model.lm_head(h)
        w = self.weight.index_select(0, rows)
        b = self.bias.index_select(0, rows) if self.bias is not None else None
        return F.linear(h, w, b)


def _new_cache(model: torch.nn.Module) -> EncoderDecoderCache:
    from transformers import DynamicCache, EncoderDecoderCache

    config: Any = model.config  # a transformers config; torch types it ``Tensor | Module``
    try:
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    except TypeError:  # transformers < 4.56: DynamicCache takes no config
        return EncoderDecoderCache(DynamicCache(), DynamicCache())


def _check_args(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, num_beams: int,
                num_return: int, normalize: str) -> None:
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise InvalidInput(f"`input_ids` must be a non-empty [batch, length] tensor, got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise InvalidInput("`attention_mask` must have the shape of `input_ids`")
    if num_beams < 1:
        raise InvalidInput(f"`num_beams` must be >= 1, got {num_beams}")
    if not 1 <= num_return <= num_beams:
        raise InvalidInput(f"`num_return` must be in [1, num_beams={num_beams}], got {num_return}")
    if normalize not in ("full", "level"):
        raise InvalidInput(f"`normalize` must be 'full' or 'level', got {normalize!r}")


@torch.inference_mode()
def beam_search_tensors(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    trie: PrefixTrie,
    num_beams: int,
    *,
    normalize: Normalize = "full",
    constrained: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The search itself, results left on the device.

    Returns ``(tokens [B, k, length], logprobs [B, k], leaves [B, k])`` sorted by score per
    query, ``k = min(num_beams, ...)``; a beam with ``-inf`` score is not a result (the
    trie had fewer IDs than beams). ``constrained=False`` disables the trie mask but keeps
    everything else (candidates = all of ``vocab[d]`` for every beam): the fair
    "unconstrained beam search of the same length" baseline; its leaves are ``-1``.
    """
    _check_args(input_ids, attention_mask, num_beams, num_beams, normalize)
    head = _T5Head(model)
    device = head.weight.device
    input_ids = input_ids.to(device)
    attention_mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(device)
    dt: DeviceTrie = trie.device_view(device)
    length = trie.length
    batch = input_ids.shape[0]
    if len(trie) == 0:
        empty = torch.empty(batch, 0, dtype=torch.long, device=device)
        return torch.empty(batch, 0, length, dtype=torch.long, device=device), empty.float(), empty

    # Trailing single-token positions contribute exactly log 1 = 0 under "level".
    steps = length
    if normalize == "level":
        while steps > 1 and dt.vocab[steps - 1].numel() == 1:
            steps -= 1

    get_encoder: Any = model.get_encoder  # transformers' T5 method; torch types it ``Tensor | Module``
    enc = get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    cache = _new_cache(model)
    ar = torch.arange(batch, device=device)
    node = torch.zeros(batch, 1, dtype=torch.long, device=device)
    score = torch.zeros(batch, 1, dtype=torch.float32, device=device)
    hist = torch.empty(batch, 1, 0, dtype=torch.long, device=device)
    feed = torch.full((batch, 1), head.start_token, dtype=torch.long, device=device)
    enc_rows, mask_rows = enc, attention_mask

    for d in range(length):
        vocab = dt.vocab[d]
        if d < steps:
            h = head.hidden(feed, enc_rows, mask_rows, cache)  # [B*r, dim]
            # Gather the candidates' logits and subtract one logsumexp per row, rather than
            # materialising log_softmax over the whole row.
            logits = head.logits(h, None if normalize == "full" else vocab).float()
            lse = torch.logsumexp(logits, dim=-1)
        r = node.shape[1]
        if constrained:
            local = dt.cand_local[d][node]  # [B, r, K]
            nxt = dt.cand_next[d][node]
            cand_tok = vocab[local]
        else:
            kk = vocab.numel()
            local = torch.arange(kk, device=device).expand(batch, r, kk)
            nxt = torch.zeros(batch, r, kk, dtype=torch.long, device=device)
            cand_tok = vocab.expand(batch, r, kk)
        k = local.shape[-1]
        if d < steps:
            picked = logits.view(batch, r, -1).gather(-1, cand_tok if normalize == "full" else local)
            total = score.unsqueeze(-1) + (picked - lse.view(batch, r, 1))
        else:
            total = score.unsqueeze(-1).expand(batch, r, k)
        total = total.masked_fill(nxt < 0, float("-inf")).reshape(batch, r * k)
        width = min(num_beams, r * k)
        score, pick = total.topk(width, dim=1)
        parent = torch.div(pick, k, rounding_mode="floor")
        new_tok = cand_tok.reshape(batch, r * k).gather(1, pick)
        node = nxt.reshape(batch, r * k).gather(1, pick).clamp_min(0)
        hist = torch.cat([hist.gather(1, parent.unsqueeze(-1).expand(-1, -1, hist.shape[-1])),
                          new_tok.unsqueeze(-1)], dim=-1)
        if d + 1 < steps:
            rows = (ar.unsqueeze(1) * r + parent).reshape(-1)
            if width != r:  # beam count changes (step 0): every cached row is re-laid out
                cache.reorder_cache(cast(torch.LongTensor, rows))  # typed LongTensor by transformers
                enc_rows = enc_rows.index_select(0, rows)
                mask_rows = mask_rows.index_select(0, rows)
            else:  # cross-attention K/V are identical across a query's beams: reorder self-attn only
                cache.self_attention_cache.reorder_cache(cast(torch.LongTensor, rows))
            feed = new_tok.reshape(-1, 1)

    leaves = dt.leaf_value[node] if constrained else torch.full_like(node, -1)
    return hist, score, leaves


def constrained_beam_search(
    model: torch.nn.Module,
    encoder_inputs: tuple[torch.Tensor, torch.Tensor | None],
    trie: PrefixTrie,
    num_beams: int = 10,
    num_return: int | None = None,
    *,
    normalize: Normalize = "full",
) -> list[list[DecodedId]]:
    """Top ``num_return`` IDs of ``trie`` per query, by sequence log-probability.

    ``encoder_inputs`` is ``(input_ids [B, S], attention_mask [B, S] or None)``. Returns
    one list per query, best first; every entry is a complete sequence of ``trie`` with its
    leaf value. A query gets fewer than ``num_return`` entries only when the trie holds
    fewer IDs. Runs on the model's device; see the module docstring for ``normalize``.
    The model should be in ``eval()`` mode (dropout would make scores random).
    """
    input_ids, attention_mask = encoder_inputs
    num_return = num_beams if num_return is None else num_return
    _check_args(input_ids, attention_mask, num_beams, num_return, normalize)
    if model.training:
        warnings.warn("constrained_beam_search on a model in training mode: dropout is active",
                      RuntimeWarning, stacklevel=2)
    tokens, scores, leaves = beam_search_tensors(
        model, input_ids, attention_mask, trie, num_beams, normalize=normalize)
    return _to_results(tokens[:, :num_return], scores[:, :num_return], leaves[:, :num_return])


def _to_results(tokens: torch.Tensor, scores: torch.Tensor, leaves: torch.Tensor) -> list[list[DecodedId]]:
    tok_rows: Sequence[Sequence[Sequence[int]]] = tokens.cpu().tolist()
    score_rows: Sequence[Sequence[float]] = scores.cpu().tolist()
    leaf_rows: Sequence[Sequence[int]] = leaves.cpu().tolist()
    out: list[list[DecodedId]] = []
    for toks, scs, lvs in zip(tok_rows, score_rows, leaf_rows, strict=True):
        out.append([DecodedId(tuple(t), s, lf) for t, s, lf in zip(toks, scs, lvs, strict=True)
                    if s != float("-inf")])
    return out
