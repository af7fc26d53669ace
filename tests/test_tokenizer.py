"""CaduceusTokenizer: equal to a plain per-character tokenizer on random and real sequences, the Hugging Face
calling convention, invalid-character policies, reverse complement on ids, decode and save/load."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from raycad.model import CaduceusTokenizer
from raycad.model.tokenizer import PAD_ID, SEP_ID, UNK_ID, VOCAB, reverse_complement_ids

CONTRACT = {"[CLS]": 0, "[SEP]": 1, "[BOS]": 2, "[MASK]": 3, "[PAD]": 4, "[RESERVED]": 5, "[UNK]": 6,
            "A": 7, "C": 8, "G": 9, "T": 10, "N": 11}


# ---- the plain per-character reference ----------------------------------------------------------------------------
def reference_ids(seq: str, invalid: str = "unk") -> list[int]:
    """One character at a time: whitespace dropped, ACGTN in either case, anything else [UNK] (or N)."""
    out = []
    for char in seq:
        if char in " \t\n\r\v\f":
            continue
        upper = char.upper() if char.isascii() else char
        out.append(CONTRACT[upper] if upper in "ACGTN" else (UNK_ID if invalid == "unk" else CONTRACT["N"]))
    return out


def reference_batch(seqs: list[str], length: int, cut: str = "right", pad: str = "left",
                    invalid: str = "unk") -> np.ndarray:
    rows = []
    for seq in seqs:
        ids = reference_ids(seq, invalid)
        excess = max(len(ids) - length, 0)
        start = {"right": 0, "left": excess, "center": excess // 2}[cut]
        ids = ids[start:start + length]
        padding = [PAD_ID] * (length - len(ids))
        rows.append(padding + ids if pad == "left" else ids + padding)
    return np.array(rows, dtype=np.int64).reshape(len(seqs), length)


def random_sequences(n: int, seed: int, alphabet: str = "ACGTNacgtn", extra: str = "",
                     longest: int = 90) -> list[str]:
    rng = random.Random(seed)
    chars = alphabet + extra
    return ["".join(rng.choices(chars, k=rng.randint(0, longest))) for _ in range(n)]


@pytest.fixture(scope="module")
def real_sequences(shared_dir) -> list[str]:
    with gzip.open(shared_dir / "data" / "human_nontata_promoters.test.csv.gz", "rt") as f:
        next(f)
        return [line.split(",")[0] for line in f][:2000]


def test_vocabulary_matches_the_contract():
    tok = CaduceusTokenizer()
    assert VOCAB == CONTRACT == tok.get_vocab() == tok.vocab
    assert (tok.pad_token_id, tok.unk_token_id, tok.sep_token_id, len(tok)) == (4, 6, 1, 12)
    assert tok.convert_tokens_to_ids(["A", "N", "[PAD]", "X"]) == [7, 11, 4, 6]
    assert tok.convert_ids_to_tokens([0, 10]) == ["[CLS]", "T"]


@pytest.mark.parametrize("cut", ["right", "left", "center"])
@pytest.mark.parametrize("pad", ["left", "right"])
@pytest.mark.parametrize(("longest", "width"), [(90, 64), (1500, 1024)])  # short / long-record code paths
def test_random_sequences_equal_the_per_character_reference(cut, pad, longest, width):
    seqs = random_sequences(200, seed=len(cut) * 10 + len(pad) + longest, extra="RYK-. \n\té*", longest=longest)
    tok = CaduceusTokenizer(truncation_side=cut, padding_side=pad)
    expected = reference_batch(seqs, width, cut, pad)
    got = tok(seqs, padding="max_length", max_length=width, truncation=True, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(got, expected)
    enc = tok.encode_batch(seqs, width)
    np.testing.assert_array_equal(enc.input_ids, expected)
    assert enc.input_ids.dtype == np.uint8
    lengths = np.array([len(reference_ids(s)) for s in seqs])
    np.testing.assert_array_equal(enc.lengths, lengths)
    np.testing.assert_array_equal(enc.truncated, lengths > width)
    clean = random_sequences(50, seed=longest, longest=longest)  # nothing to drop or flag: the fast paths
    np.testing.assert_array_equal(tok.encode_batch(pa.array(clean), width).input_ids,
                                  reference_batch(clean, width, cut, pad))


def test_real_sequences_equal_the_reference_also_from_arrow(real_sequences):
    tok = CaduceusTokenizer()
    expected = reference_batch(real_sequences, 251)
    got = tok(real_sequences, padding="max_length", max_length=251, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(got["input_ids"], expected)
    # Arrow input is read zero-copy: sliced arrays (non-zero offset), large_string and chunked arrays agree.
    arrow = pa.array(real_sequences, pa.string())
    np.testing.assert_array_equal(tok.encode_batch(arrow, 251).input_ids, expected)
    np.testing.assert_array_equal(tok.encode_batch(arrow.slice(7, 100), 251).input_ids, expected[7:107])
    np.testing.assert_array_equal(tok.encode_batch(pa.array(real_sequences, pa.large_string()), 200,
                                                   truncation_side="center").input_ids,
                                  reference_batch(real_sequences, 200, "center"))
    chunked = pa.chunked_array([arrow.slice(0, 10), arrow.slice(10, 5)])
    np.testing.assert_array_equal(tok.encode_batch(chunked, 251).input_ids, expected[:15])
    # Longer than the sequences: left padding only.
    wide = tok.encode_batch(real_sequences[:50], 300).input_ids
    assert (wide[:, :49] == PAD_ID).all() and (wide[:, 49:] == expected[:50]).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ACGTNacgtnXU- \n", max_size=40), min_size=1, max_size=12),
       st.integers(min_value=1, max_value=50), st.sampled_from(["left", "right", "center"]))
def test_property_equals_reference(seqs, length, cut):
    tok = CaduceusTokenizer(truncation_side=cut)
    np.testing.assert_array_equal(tok.encode_batch(seqs, length).input_ids, reference_batch(seqs, length, cut))


def test_hugging_face_calling_convention():
    tok = CaduceusTokenizer()
    seqs = ["ACGTN", "gg", ""]
    out = tok(seqs, padding="max_length", max_length=6, truncation=True, return_tensors="pt")
    assert isinstance(out["input_ids"], torch.Tensor) and out["input_ids"].dtype == torch.int64
    assert out["input_ids"].tolist() == [[4, 7, 8, 9, 10, 11], [4, 4, 4, 4, 9, 9], [4] * 6]
    assert tok(seqs)["input_ids"] == [[7, 8, 9, 10, 11], [9, 9], []]
    assert tok("ACG", add_special_tokens=True)["input_ids"] == [7, 8, 9, SEP_ID]
    longest = tok(seqs, padding=True, return_tensors="np", return_attention_mask=True)
    assert longest["input_ids"].shape == (3, 5)
    assert longest["attention_mask"].tolist() == [[1] * 5, [0, 0, 0, 1, 1], [0] * 5]
    # Truncation keeps room for [SEP]; without truncation, longer records keep their length.
    sep = tok(["ACGTACGT"], padding="max_length", max_length=4, truncation=True, add_special_tokens=True,
              return_tensors="np")["input_ids"]
    assert sep.tolist() == [[7, 8, 9, SEP_ID]]
    assert tok(["ACGTACGT"], padding="max_length", max_length=4, return_tensors="np")["input_ids"].shape == (1, 8)
    assert tok("ACGTACGT", truncation="left", max_length=3)["input_ids"] == [8, 9, 10]  # keeps the end
    with pytest.raises(ValueError, match="padding"):
        tok(["A", "AC"], return_tensors="np")
    with pytest.raises(ValueError, match="padding must be"):
        tok(["A"], padding="sideways")


def test_invalid_character_policies_are_explicit_and_counted():
    seqs = ["ACXTG", "NNRY", "ACGT", "aé"]
    assert CaduceusTokenizer()(seqs)["input_ids"][:2] == [[7, 8, UNK_ID, 10, 9], [11, 11, UNK_ID, UNK_ID]]
    assert CaduceusTokenizer(invalid="n")(seqs)["input_ids"][0] == [7, 8, 11, 10, 9]
    enc = CaduceusTokenizer().encode_batch(seqs, 8)
    assert enc.n_invalid.tolist() == [1, 2, 0, 1]  # a non-ASCII character counts once
    for policy in ("drop", "reject"):  # rejecting records is the record contract's job (raycad.data.records)
        with pytest.raises(ValueError, match="invalid must be 'unk' or 'n'"):
            CaduceusTokenizer(invalid=policy)


def test_reverse_complement_matches_the_reference_conjoined_input(shared_dir):
    golden = load_file(str(shared_dir / "reference" / "caduceus_ph_tiny" / "golden.safetensors"))
    conjoined = golden["input_ids_conjoined"]
    np.testing.assert_array_equal(conjoined[..., 0], golden["input_ids"])
    np.testing.assert_array_equal(reverse_complement_ids(golden["input_ids"]), conjoined[..., 1])
    as_torch = reverse_complement_ids(torch.from_numpy(golden["input_ids"]))
    np.testing.assert_array_equal(as_torch.numpy(), conjoined[..., 1])


def test_reverse_complement_keeping_left_padding_equals_tokenizing_the_reverse_strand():
    seqs = random_sequences(200, seed=3, alphabet="ACGTN")
    tok = CaduceusTokenizer()
    ids = tok(seqs, padding="max_length", max_length=70, truncation=True, return_tensors="np")["input_ids"]
    table = str.maketrans("ACGTN", "TGCAN")
    rc_strings = [s[:70].translate(table)[::-1] for s in seqs]
    expected = tok(rc_strings, padding="max_length", max_length=70, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(reverse_complement_ids(ids, padding_side="left"), expected)
    np.testing.assert_array_equal(reverse_complement_ids(torch.from_numpy(ids), padding_side="left").numpy(),
                                  expected)
    np.testing.assert_array_equal(reverse_complement_ids(reverse_complement_ids(ids)), ids)
    right = CaduceusTokenizer(padding_side="right")
    ids_right = right(seqs, padding="max_length", max_length=70, truncation=True, return_tensors="np")["input_ids"]
    expected_right = right(rc_strings, padding="max_length", max_length=70, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(reverse_complement_ids(ids_right, padding_side="right"), expected_right)


def test_decode_and_save_load_round_trip(tmp_path):
    tok = CaduceusTokenizer(model_max_length=1024, truncation_side="center", invalid="n")
    ids = tok(["ACGTN", "GA"], padding=True, return_tensors="np")["input_ids"]
    assert tok.batch_decode(ids, skip_special_tokens=True) == ["ACGTN", "GA"]
    assert tok.decode(ids[1]) == "[PAD][PAD][PAD]GA"
    tok.save_pretrained(tmp_path)
    loaded = CaduceusTokenizer.from_pretrained(tmp_path)
    assert (loaded.model_max_length, loaded.truncation_side, loaded.invalid, loaded.padding_side) == \
        (1024, "center", "n", "left")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["vocab"]["A"] = 5
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="vocabulary differs"):
        CaduceusTokenizer.from_pretrained(tmp_path)
    (tmp_path / "empty").mkdir()
    assert CaduceusTokenizer.from_pretrained(tmp_path / "empty").model_max_length == 131_072  # no config: defaults
