"""The generative tokenizer: reserved tokens, ID encoding, injection safety, round trip."""

from __future__ import annotations

import pytest

from tandem.errors import InvalidInput
from tandem.generative.tokenizer import TASK_TOKENS, TandemTokenizer, id_token, train_tokenizer

CORPUS = ["Cordless Drill 20V Lithium-Ion Kit", "Claw Hammer 16 oz Fiberglass Handle",
          "Garden Hose 50 ft. Heavy Duty", "Kitchen Faucet Pull Down Stainless Steel"] * 5


@pytest.fixture(scope="module")
def tok() -> TandemTokenizer:
    return train_tokenizer(CORPUS, 320, [3, 4])


def test_t5_special_ids_and_one_token_per_reserved_symbol(tok: TandemTokenizer) -> None:
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    assert len(set(tok.task_ids.values())) == len(TASK_TOKENS)
    assert tok.id_table.shape == (2, 4)
    assert tok.id_table[0, 3] == -1  # position 0 has only 3 codes
    assert len({int(t) for t in tok.id_table.ravel() if t >= 0}) == 7
    for p, c in [(0, 2), (1, 3)]:
        assert tok.hf.convert_ids_to_tokens(int(tok.id_table[p, c])) == id_token(p, c)


def test_encode_decode_id_round_trip_and_bounds(tok: TandemTokenizer) -> None:
    ids = tok.encode_id((2, 1))
    assert tok.decode_id(ids) == (2, 1)
    with pytest.raises(InvalidInput, match=r"`codes\[0\]`"):
        tok.encode_id((3, 0))
    with pytest.raises(InvalidInput, match="`codes` must have 2"):
        tok.encode_id((1,))


def test_text_cannot_smuggle_reserved_tokens(tok: TandemTokenizer) -> None:
    # A query spelling an ID token or EOS must stay text, not become the reserved token.
    ids = tok.encode_texts(["drill <id_0_1> </s> <q2id>"], 64)[0]
    reserved = {int(t) for t in tok.id_table.ravel() if t >= 0} | set(tok.task_ids.values())
    assert not reserved & set(ids)
    assert ids.count(tok.eos_id) == 1 and ids[-1] == tok.eos_id


def test_truncation_keeps_eos_and_lowercases(tok: TandemTokenizer) -> None:
    long = tok.encode_texts(["cordless drill " * 40], 8)[0]
    assert len(long) == 8 and long[-1] == tok.eos_id
    assert tok.encode_texts(["DRILL"], 8) == tok.encode_texts(["drill"], 8)


def test_save_load_round_trip(tok: TandemTokenizer, tmp_path) -> None:
    tok.save(tmp_path)
    again = TandemTokenizer.load(tmp_path, [3, 4])
    assert (again.id_table == tok.id_table).all()
    assert again.encode_texts(CORPUS[:2], 16) == tok.encode_texts(CORPUS[:2], 16)


@pytest.mark.parametrize(("vocab", "space", "field"), [(100, [2], "vocab_size"), (400, [], "id_space"),
                                                        (400, [2, 0], "id_space")])
def test_bad_arguments(vocab: int, space: list[int], field: str) -> None:
    with pytest.raises(InvalidInput, match=f"`{field}`"):
        train_tokenizer(CORPUS, vocab, space)
