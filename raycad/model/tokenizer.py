"""Character tokenizer of Caduceus, vectorized with numpy over raw bytes (or Arrow string buffers).

The vocabulary is that of the released Caduceus checkpoints: seven special tokens ``[CLS]=0 [SEP]=1
[BOS]=2 [MASK]=3 [PAD]=4 [RESERVED]=5 [UNK]=6`` followed by the bases ``A=7 C=8 G=9 T=10 N=11``.
Lower-case (soft-masked) bases map to upper case, whitespace is removed, and every other character maps
to ``[UNK]`` (or to ``N``, by an explicit option) and is counted. Rejecting records is the record
contract's job (`raycad.data.records`), not the tokenizer's. Sequences are padded on the left by default,
like the authors' Hugging Face tokenizer.

Instead of a Python loop per character, all sequences of a batch are concatenated into one byte buffer
(an Arrow ``string`` column already is one), mapped through a 256-entry lookup table in one numpy call,
and scattered into the padded ``[batch, length]`` matrix with index arithmetic.

    >>> tok = CaduceusTokenizer()
    >>> tok(["ACGTn", "GG"], padding="max_length", max_length=6, truncation=True,
    ...     return_tensors="np")["input_ids"].tolist()
    [[4, 7, 8, 9, 10, 11], [4, 4, 4, 4, 9, 9]]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

CLS_ID, SEP_ID, BOS_ID, MASK_ID, PAD_ID, RESERVED_ID, UNK_ID = range(7)
A_ID, C_ID, G_ID, T_ID, N_ID = range(7, 12)
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
BASES = "ACGTN"
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(BASES))}
ID_TO_TOKEN: tuple[str, ...] = tuple(VOCAB)
VOCAB_SIZE = len(VOCAB)
COMPLEMENT_MAP: dict[int, int] = {i: i for i in range(VOCAB_SIZE)} | {A_ID: T_ID, C_ID: G_ID, G_ID: C_ID, T_ID: A_ID}
"""The complement of every token id: A<->T, C<->G; specials and N are their own complement."""

InvalidPolicy = Literal["unk", "n"]
Side = Literal["left", "right"]
TruncationSide = Literal["left", "right", "center"]

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"

# Lookup codes that are not token ids.
_DROP = 255      # whitespace and UTF-8 continuation bytes: removed
_INVALID = 254   # any other character: [UNK] or N, by policy


def _build_table() -> np.ndarray:
    table = np.full(256, _INVALID, dtype=np.uint8)
    for base in BASES:
        table[ord(base)] = table[ord(base.lower())] = VOCAB[base]
    for char in " \t\n\r\v\f":
        table[ord(char)] = _DROP
    table[0x80:0xC0] = _DROP  # continuation bytes: a non-ASCII character counts once, by its lead byte
    return table


BYTE_TABLE = _build_table()
"""256-entry map from a byte to a token id (or a `_DROP` / `_INVALID` code)."""
_TABLE_BYTES = BYTE_TABLE.tobytes()
_LONG_RECORD = 512
"""Mean kept tokens per record above which records are copied one slice at a time."""

_COMPLEMENT = np.arange(256, dtype=np.int64)
_COMPLEMENT[list(COMPLEMENT_MAP)] = list(COMPLEMENT_MAP.values())


def reverse_complement_ids(ids: Any, padding_side: Side | None = None) -> Any:
    """Reverse complement of token ids along the last axis (numpy array or torch tensor, any leading shape).

    With ``padding_side=None`` the whole row is flipped, so left padding ends up on the right: this is the
    exact reverse complement of the input tensor that reverse-complement-equivariant models expect (and
    what the reference conjoined inputs hold). With ``padding_side="left"`` only the sequence is
    reverse-complemented and the padding stays on the left, as if the reverse-complement strand had been
    tokenized (used for training augmentation).
    """
    is_torch = not isinstance(ids, np.ndarray) and type(ids).__module__.startswith("torch")
    if is_torch:
        import torch

        table = torch.as_tensor(_COMPLEMENT, device=ids.device)
        out = table[ids.long()].to(ids.dtype)
        return out.flip(-1) if padding_side is None else _unflip_padding(out.flip(-1), padding_side)
    ids = np.asarray(ids)
    out = _COMPLEMENT[ids].astype(ids.dtype)[..., ::-1]
    return np.ascontiguousarray(out) if padding_side is None else _unflip_padding(out, padding_side)


def _unflip_padding(flipped: Any, padding_side: Side) -> Any:
    """Move the padding of a flipped row back to ``padding_side`` by rolling each row by its pad count."""
    length = flipped.shape[-1]
    is_pad = flipped == PAD_ID
    n_pad = is_pad.sum(-1, keepdims=True)
    cols = np.arange(length) if isinstance(flipped, np.ndarray) else _torch_arange(length, flipped)
    # After the flip, left padding sits at the right end: row[j] takes row[(j - n_pad) mod L] for a left
    # layout, row[(j + n_pad) mod L] for a right one.
    shift = -n_pad if padding_side == "left" else n_pad
    index = (cols + shift) % length
    if isinstance(flipped, np.ndarray):
        return np.take_along_axis(flipped, index, axis=-1)
    return flipped.gather(-1, index)


def _torch_arange(length: int, like: Any) -> Any:
    import torch

    return torch.arange(length, device=like.device)


@dataclass
class EncodedBatch:
    """What `CaduceusTokenizer.encode_batch` returns: padded ids plus per-record bookkeeping."""

    input_ids: np.ndarray
    """uint8 [N, L] token ids, padded with [PAD] on `padding_side`."""
    lengths: np.ndarray
    """int64 [N]: tokens of each record after normalization, before truncation (0 = empty record)."""
    n_invalid: np.ndarray
    """int64 [N]: characters outside ACGTN (mapped to [UNK]/N, or the reason a record is rejected)."""

    @property
    def truncated(self) -> np.ndarray:
        """bool [N]: records longer than the padded length."""
        return self.lengths > self.input_ids.shape[1]


class CaduceusTokenizer:
    """Caduceus's character tokenizer with the Hugging Face calling convention, vectorized underneath.

    Args:
        model_max_length: default ``max_length`` when truncating or padding to "max_length".
        padding_side: "left" (the default of the released checkpoints) or "right".
        truncation_side: which end is cut from an over-long sequence: "right" keeps the start (the Hugging
            Face default, used by the paper), "left" keeps the end, "center" keeps the middle.
        invalid: characters outside ACGTN (after upper-casing): "unk" -> [UNK], "n" -> N.
    """

    model_input_names: ClassVar[list[str]] = ["input_ids"]

    def __init__(self, model_max_length: int = 131_072, padding_side: Side = "left",
                 truncation_side: TruncationSide = "right", invalid: InvalidPolicy = "unk") -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        if truncation_side not in ("left", "right", "center"):
            raise ValueError(f"truncation_side must be 'left', 'right' or 'center', not {truncation_side!r}")
        if invalid not in ("unk", "n"):
            raise ValueError(f"invalid must be 'unk' or 'n', not {invalid!r}")
        self.model_max_length = int(model_max_length)
        self.padding_side: Side = padding_side
        self.truncation_side: TruncationSide = truncation_side
        self.invalid: InvalidPolicy = invalid

    # ---- vocabulary ----------------------------------------------------------------------------------------
    pad_token, unk_token, cls_token, sep_token, mask_token, bos_token = (
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]")
    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id, bos_token_id = (
        PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID)
    all_special_ids: ClassVar[list[int]] = list(range(len(SPECIAL_TOKENS)))

    @property
    def vocab(self) -> dict[str, int]:
        return dict(VOCAB)

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    def __len__(self) -> int:
        return len(VOCAB)

    def get_vocab(self) -> dict[str, int]:
        return dict(VOCAB)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return VOCAB.get(tokens, UNK_ID)
        return [VOCAB.get(t, UNK_ID) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return ID_TO_TOKEN[int(ids)]
        return [ID_TO_TOKEN[int(i)] for i in ids]

    # ---- encoding ------------------------------------------------------------------------------------------
    def encode_batch(self, sequences: Sequence[str] | Any, max_length: int | None = None, *,
                     truncation_side: TruncationSide | None = None, padding_side: Side | None = None,
                     invalid: InvalidPolicy | None = None) -> EncodedBatch:
        """Tokenize a batch into a ``[N, L]`` uint8 matrix, truncating records longer than ``L``.

        ``sequences`` is a list of str/bytes, a numpy array of them, or a pyarrow (large_)string array or
        chunked array (used zero-copy). ``max_length=None`` pads to the longest record (no truncation).
        """
        codes, offsets, lengths, n_invalid = self._prepare(sequences, invalid or self.invalid)
        width = int(lengths.max(initial=0)) if max_length is None else int(max_length)
        ids = _pad_scatter(codes, offsets, lengths, width, truncation_side or self.truncation_side,
                           padding_side or self.padding_side)
        return EncodedBatch(ids, lengths, n_invalid)

    @staticmethod
    def _prepare(sequences: Any, invalid: InvalidPolicy) -> tuple[np.ndarray, ...]:
        """Token codes of all records in one buffer, offsets [N + 1], lengths and invalid counts [N]."""
        data, offsets = _byte_buffer(sequences)
        codes, offsets = _lookup(data, offsets)
        n_invalid = _count_invalid(codes, offsets)
        if n_invalid.any():
            codes[codes == _INVALID] = UNK_ID if invalid == "unk" else N_ID
        return codes, offsets, np.diff(offsets), n_invalid

    def __call__(self, sequences: str | Sequence[str], padding: bool | str = False,
                 truncation: bool | str = False, max_length: int | None = None,
                 return_tensors: str | None = None, add_special_tokens: bool = False,
                 return_attention_mask: bool = False, **unused: Any) -> dict[str, Any]:
        """Hugging Face convention: ``tok(seqs, padding="max_length", max_length=L, truncation=True,
        return_tensors="np" | "pt")["input_ids"]``.

        ``padding``: False/"do_not_pad", True/"longest", or "max_length". ``truncation``: True (cut on
        `truncation_side`), False, or a side ("left" | "right" | "center"). ``add_special_tokens`` appends
        [SEP] as the authors' tokenizer does; it is off by default because the paper's classification
        pipelines tokenize without special tokens. Without padding and ``return_tensors=None`` the result
        holds lists of ids of each record's own length. Records longer than ``max_length`` without
        truncation keep their length (the batch is then padded to the longest).
        """
        single = isinstance(sequences, (str, bytes))
        padding = {True: "longest", False: "do_not_pad"}.get(padding, padding)  # type: ignore[arg-type]
        if padding not in ("do_not_pad", "longest", "max_length"):
            raise ValueError(f"padding must be True/False, 'longest', 'max_length' or 'do_not_pad', "
                             f"not {padding!r}")
        side = self.truncation_side if truncation is True else (truncation or None)
        max_length = int(max_length or self.model_max_length)
        reserve = 1 if add_special_tokens else 0
        codes, offsets, lengths, _ = self._prepare([sequences] if single else sequences, self.invalid)
        kept = np.minimum(lengths, max_length - reserve) if side else lengths
        width = int(kept.max(initial=0))
        if padding == "max_length":
            width = max(width, max_length - reserve)
        pad_side: Side = "right" if padding == "do_not_pad" else self.padding_side
        ids = _pad_scatter(codes, offsets, lengths, width, side or "right", pad_side, dtype=np.int64)
        if add_special_tokens:
            ids = np.concatenate([ids, np.full((len(ids), 1), PAD_ID, dtype=np.int64)], axis=1)
            sep_col = ids.shape[1] - 1 if pad_side == "left" else kept
            ids[np.arange(len(ids)), sep_col] = SEP_ID
            kept = kept + 1
        if padding == "do_not_pad" and (return_tensors is None or len(set(kept.tolist())) > 1):
            if return_tensors is not None:
                raise ValueError("records of different lengths need padding to be returned as tensors")
            rows = [row[:k].tolist() for row, k in zip(ids, kept)]
            out: dict[str, Any] = {"input_ids": rows[0] if single else rows}
            if return_attention_mask:
                masks = [[1] * len(r) for r in rows]
                out["attention_mask"] = masks[0] if single else masks
            return out
        result = {"input_ids": ids}
        if return_attention_mask:
            result["attention_mask"] = (ids != PAD_ID).astype(np.int64)
        return _convert(result, return_tensors, single)

    def encode(self, sequence: str, **kwargs: Any) -> list[int]:
        """Token ids of one sequence (no padding unless asked)."""
        return self(sequence, **kwargs)["input_ids"]

    # ---- decoding ------------------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int] | Any, skip_special_tokens: bool = False) -> str:
        """Ids back to a string; special tokens appear as e.g. ``[PAD]`` unless skipped."""
        ids = np.asarray(ids.tolist() if hasattr(ids, "tolist") else list(ids), dtype=np.int64).ravel()
        if skip_special_tokens:
            ids = ids[ids >= A_ID]
        return "".join(ID_TO_TOKEN[i] for i in ids)

    def batch_decode(self, batch: Iterable[Iterable[int]] | Any, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in batch]

    # ---- persistence ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer_class": "CaduceusTokenizer", "characters": list(BASES[:4]),
                "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                "truncation_side": self.truncation_side, "invalid": self.invalid,
                "vocab": dict(VOCAB)}

    def save_pretrained(self, save_directory: str | Path) -> tuple[str]:
        """Write ``tokenizer_config.json`` (vocabulary and options) into a model directory."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / TOKENIZER_CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return (str(path / TOKENIZER_CONFIG_NAME),)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, **overrides: Any) -> CaduceusTokenizer:
        """Load from a directory holding ``tokenizer_config.json`` (or a Hugging Face repo id when online).

        A directory without the file gives the default tokenizer; a config whose vocabulary differs from
        Caduceus's raises `ValueError`. Keys of the authors' config that do not apply here are ignored.
        """
        path = Path(path_or_repo_id)
        if path.is_dir():
            file = path / TOKENIZER_CONFIG_NAME
            config = json.loads(file.read_text()) if file.is_file() else {}
        elif path.is_file():
            file, config = path, json.loads(path.read_text())
        else:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(str(path_or_repo_id), TOKENIZER_CONFIG_NAME))
            config = json.loads(file.read_text())
        vocab = config.get("vocab")
        if vocab is not None and {k: int(v) for k, v in vocab.items()} != VOCAB:
            raise ValueError(f"{file}: vocabulary differs from Caduceus's {VOCAB}")
        chars = config.get("characters")
        if chars is not None and list(chars) != list(BASES[:4]):
            raise ValueError(f"{file}: characters {chars} differ from Caduceus's {list(BASES[:4])}")
        kwargs = {k: config[k] for k in ("model_max_length", "padding_side", "truncation_side", "invalid")
                  if k in config}
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return (f"CaduceusTokenizer(model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
                f"truncation_side={self.truncation_side!r}, invalid={self.invalid!r})")


# ---- vectorized kernels ---------------------------------------------------------------------------------------
def _byte_buffer(sequences: Any) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 buffer with every record's bytes and int64 offsets [N + 1] (Arrow: zero-copy)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(sequences, (pa.Array, pa.ChunkedArray)):
        return _arrow_buffer(sequences)
    if not isinstance(sequences, list):
        sequences = list(sequences)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    try:
        joined = "".join(sequences).encode()
    except TypeError:  # bytes or other items
        joined = None
    if joined is not None:
        np.cumsum(np.fromiter(map(len, sequences), np.int64, len(sequences)), out=offsets[1:])
        if len(joined) == offsets[-1]:  # all ASCII: characters are bytes
            return np.frombuffer(joined, dtype=np.uint8), offsets
    items = [s.encode() if isinstance(s, str) else bytes(s) for s in sequences]
    np.cumsum(np.fromiter(map(len, items), np.int64, len(items)), out=offsets[1:])
    return np.frombuffer(b"".join(items), dtype=np.uint8), offsets


def _arrow_buffer(array: Any) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_string(array.type) or pa.types.is_binary(array.type):
        offset_type = np.int32
    elif pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
        offset_type = np.int64
    else:
        raise TypeError(f"expected an Arrow string column, got {array.type}")
    if array.null_count:
        raise ValueError(f"{array.null_count} missing (null) sequence(s) in the batch")
    _, offset_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offset_buf, dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    offsets = offsets.astype(np.int64)
    if data_buf is None:
        return np.zeros(0, dtype=np.uint8), offsets - offsets[0]
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data, offsets - offsets[0]


def _lookup(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map every byte through `BYTE_TABLE` (one C pass, ``bytes.translate``) and remove the dropped ones
    (whitespace, UTF-8 continuation bytes); offsets follow. Codes are read-only unless something was
    dropped or flagged."""
    codes = np.frombuffer(data.tobytes().translate(_TABLE_BYTES), dtype=np.uint8)
    if len(codes) == 0 or codes.max() < _INVALID:  # the common case: nothing to drop or flag
        return codes, offsets
    keep = codes != _DROP
    if keep.all():
        return codes.copy(), offsets
    kept_before = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return codes[keep], kept_before[offsets]


def _count_invalid(codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Characters outside ACGTN per record (codes still holding `_INVALID`)."""
    if len(codes) == 0 or codes.max() < _INVALID:
        return np.zeros(len(offsets) - 1, dtype=np.int64)
    before = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(codes == _INVALID, out=before[1:])
    return np.diff(before[offsets])


def _truncation_starts(lengths: np.ndarray, kept: np.ndarray, side: TruncationSide) -> np.ndarray:
    """Index of the first kept token of each record."""
    excess = lengths - kept
    if side == "right":
        return np.zeros_like(lengths)
    if side == "left":
        return excess
    if side == "center":
        return excess // 2
    raise ValueError(f"truncation side must be 'left', 'right' or 'center', not {side!r}")


def _pad_scatter(codes: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, width: int,
                 truncation_side: TruncationSide, padding_side: Side, dtype: Any = np.uint8) -> np.ndarray:
    """Place each record's (truncated) tokens into a ``[N, width]`` matrix padded with [PAD]."""
    n = len(lengths)
    kept = np.minimum(lengths, width)
    starts = offsets[:-1] + _truncation_starts(lengths, kept, truncation_side)
    out = np.full((n, width), PAD_ID, dtype=dtype)
    if n == 0 or width == 0:
        return out
    if (lengths == lengths[0]).all() and (starts - offsets[:-1] == starts[0] - offsets[0]).all():
        # Equal-length records (the common case): a strided view, no index arrays.
        k, first = int(kept[0]), int(starts[0] - offsets[0])
        block = codes.reshape(n, int(lengths[0]))[:, first:first + k]
        if padding_side == "left":
            out[:, width - k:] = block
        else:
            out[:, :k] = block
        return out
    if kept.sum() >= _LONG_RECORD * n:
        # Long records: one slice copy per record costs less than the index masks below.
        for row, (first, k) in enumerate(zip(starts.tolist(), kept.tolist())):
            if padding_side == "left":
                out[row, width - k:] = codes[first:first + k]
            else:
                out[row, :k] = codes[first:first + k]
        return out
    # Many short records: the kept tokens of all records, in order, fill the non-padding cells row by row.
    if (kept == lengths).all():
        tokens = codes  # nothing truncated: the buffer already is that sequence
    else:  # select each record's window with a run-length mask: [cut before, kept, cut after]
        runs = np.stack([starts - offsets[:-1], kept, offsets[1:] - starts - kept], axis=1).ravel()
        window = np.repeat(np.tile(np.array([False, True, False]), n), runs)
        tokens = codes[window]
    cells = np.stack([width - kept, kept] if padding_side == "left" else [kept, width - kept], axis=1).ravel()
    filled = np.repeat(np.tile(np.array([padding_side == "right", padding_side == "left"]), n), cells)
    out.reshape(-1)[filled] = tokens
    return out


def _convert(out: dict[str, np.ndarray], return_tensors: str | None, single: bool) -> dict[str, Any]:
    if single:
        out = {k: v[0] for k, v in out.items()}
    if return_tensors in (None, "np"):
        return out if return_tensors == "np" else {k: v.tolist() for k, v in out.items()}
    if return_tensors == "pt":
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
    raise ValueError(f"return_tensors must be None, 'np' or 'pt', not {return_tensors!r}")
