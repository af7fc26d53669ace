"""Cutting sequence records into fixed-length token windows: a Ray Data ``map_batches`` transform.

A record of ``n <= max_length`` tokens (a read, a short contig) is one window, kept as it is and left-padded.
A longer one (a chromosome) gets ``1 + ceil((n - max_length) / stride)`` windows of exactly ``max_length``
tokens starting at ``0, stride, 2 * stride, ...``; the last one is moved back to end at the record's end, so
together the windows cover every base and nothing runs past the record. Windows in which more than
``max_n_fraction`` of the tokens are N or [UNK] (assembly gaps, centromeres) are dropped; `count_windows`
counts them.

Each window gets a 64-bit ``key`` (a hash of its record id and start) that drives the held-out split (a seeded
``val_fraction`` of the windows, unless whole records are held out by id) and, later, the seeded RC
augmentation and masking. `window_batch` is a generator: a chromosome's windows leave in chunks of
`CHUNK_WINDOWS`, so no block holds more than one chunk of windows.

    ds.map_batches(window_batch, batch_format="pyarrow", fn_kwargs=window_options(cfg.data, cfg.train.seed))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raycad.data.preprocess import splitmix64, uniform_from_keys
from raycad.model.tokenizer import N_ID, PAD_ID, UNK_ID, CaduceusTokenizer

CHUNK_WINDOWS = 2048
"""Windows per output batch of `window_batch`."""
COUNT_COLUMNS = ("records", "bases", "windows", "mostly_n", "heldout", "train")


def window_options(data: Any, seed: int, *, heldout: bool = True) -> dict[str, Any]:
    """`window_batch` / `count_windows` keyword arguments from a `PretrainDataSection`.

    ``heldout=False`` (a held-out file, or training data when held-out files are given): no window is marked.
    """
    return {"max_length": data.max_length, "stride": data.stride or data.max_length,
            "max_n_fraction": data.max_n_fraction,
            "invalid_chars": "n" if data.invalid_chars == "n" else "unk",
            "holdout": tuple(data.holdout) if heldout else (),
            "val_fraction": data.val_fraction if heldout and not data.holdout else 0.0, "seed": seed}


def window_spans(lengths: np.ndarray, max_length: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(record index, start, size)`` of every window of records of the given token ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    excess = np.maximum(lengths - max_length, 0)
    counts = np.where(lengths > 0, 1 + (excess + stride - 1) // stride, 0)
    record = np.repeat(np.arange(len(lengths)), counts)
    first = np.cumsum(counts) - counts
    index = np.arange(int(counts.sum()), dtype=np.int64) - first[record]
    starts = np.minimum(index * stride, excess[record])
    sizes = np.minimum(lengths[record], max_length)
    return record, starts, sizes


@dataclass
class _Windows:
    """The windows of one batch of records (all of them, before the N filter)."""

    codes: np.ndarray
    offsets: np.ndarray
    record: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    mostly_n: np.ndarray
    heldout: np.ndarray
    keys: np.ndarray
    num_records: int


def _plan(batch: pa.Table, *, max_length: int, stride: int, max_n_fraction: float, invalid_chars: str,
          holdout: tuple[str, ...], val_fraction: float, seed: int) -> _Windows:
    import pandas as pd

    sequences = batch.column("sequence")
    if sequences.null_count:
        sequences = pc.fill_null(sequences, "")
    codes, offsets, lengths, _ = CaduceusTokenizer._prepare(sequences, invalid_chars)
    record, starts, sizes = window_spans(lengths, max_length, stride)
    begin = offsets[record] + starts
    unknown = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum((codes == N_ID) | (codes == UNK_ID), out=unknown[1:])
    mostly_n = (unknown[begin + sizes] - unknown[begin]) > max_n_fraction * sizes
    ids = batch.column("id").to_numpy(zero_copy_only=False).astype(object)
    record_keys = pd.util.hash_array(ids, categorize=False)
    keys = splitmix64(record_keys[record] ^ splitmix64(starts.astype(np.uint64)))
    if holdout:
        heldout = np.isin(ids, np.asarray(holdout, dtype=object))[record]
    elif val_fraction > 0:
        heldout = uniform_from_keys(keys, seed, 0x4E1D) < val_fraction
    else:
        heldout = np.zeros(len(record), dtype=bool)
    return _Windows(codes, offsets, record, starts, sizes, mostly_n, heldout, keys, len(lengths))


def gather_windows(codes: np.ndarray, begin: np.ndarray, sizes: np.ndarray, max_length: int) -> np.ndarray:
    """uint8 [W, max_length]: ``codes[begin:begin + size]`` of each window, left-padded with [PAD]."""
    out = np.full((len(begin), max_length), PAD_ID, dtype=np.uint8)
    full = sizes == max_length
    if full.any():
        view = np.lib.stride_tricks.sliding_window_view(codes, max_length)
        out[full] = view[begin[full]]
    for row in np.flatnonzero(~full):  # short records (reads): one slice each
        size = int(sizes[row])
        out[row, max_length - size:] = codes[begin[row]:begin[row] + size]
    return out


def window_batch(batch: pa.Table, **options: Any) -> Iterator[dict[str, np.ndarray]]:
    """Records ``{sequence, id, ...}`` -> windows ``{input_ids: uint8 [W, max_length], key: uint64,
    heldout: bool}`` without the mostly-N ones, in chunks of `CHUNK_WINDOWS` (see the module docstring)."""
    plan = _plan(batch, **options)
    keep = np.flatnonzero(~plan.mostly_n)
    max_length = options["max_length"]
    if not len(keep):
        yield {"input_ids": np.zeros((0, max_length), np.uint8), "key": np.zeros(0, np.uint64),
               "heldout": np.zeros(0, bool)}
        return
    for first in range(0, len(keep), CHUNK_WINDOWS):
        rows = keep[first:first + CHUNK_WINDOWS]
        begin = plan.offsets[plan.record[rows]] + plan.starts[rows]
        yield {"input_ids": gather_windows(plan.codes, begin, plan.sizes[rows], max_length),
               "key": plan.keys[rows], "heldout": plan.heldout[rows]}


def count_windows(batch: pa.Table, **options: Any) -> dict[str, np.ndarray]:
    """One row of counts for a batch of records: records, bases (tokens), windows, mostly-N windows dropped,
    and of the kept windows how many are held out and how many train."""
    plan = _plan(batch, **options)
    kept = ~plan.mostly_n
    counts = {"records": plan.num_records, "bases": int(np.diff(plan.offsets).sum()),
              "windows": len(plan.record), "mostly_n": int(plan.mostly_n.sum()),
              "heldout": int((kept & plan.heldout).sum()), "train": int((kept & ~plan.heldout).sum())}
    return {name: np.array([value], dtype=np.int64) for name, value in counts.items()}
