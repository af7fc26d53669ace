"""How wide a batch of left-padded token ids is (`PaddingRule`), and length-aware batching.

Records are tokenized to ``max_length`` columns, left-padded. A batch is then cut to the width its
`PaddingRule` gives:

- ``mode="max_length"``: every batch keeps all ``max_length`` columns;
- ``mode="longest"``: a batch keeps only as many columns as its longest record needs, rounded up to a
  multiple of ``multiple`` (so few distinct widths occur) and capped at ``max_length``.

Padding is not free for Caduceus: [PAD] tokens on the left pass through the forward-direction scan and
change the state the real tokens start from, so the rule is part of the model. A run records it in the
exported ``raycad.json`` (`PaddingRule.to_meta`) and evaluation and prediction read it back
(`PaddingRule.from_meta`); an export without the keys (older raycad) gets the rule it was evaluated with.

Under ``longest`` a record's result depends on how much padding its batch gives it, so inference (test
evaluation, ``raycad evaluate``, ``raycad predict``) batches only records of the same width
(`width_batches`): each record is padded exactly to its own length rounded up to ``multiple``, whatever
input order, window or actor it lands in. Training buckets by length (`bucket_dataset`): a window of
records is sorted by width and cut into consecutive runs of one *global* batch each, so each batch holds
records of similar length and pads only to its own longest one (rounded up), at most one bucket step more than
inference gives them. Every DDP rank reads the same global batches in the same seeded order and trains on its
slice of each, so at every step all ranks hold batches of the same width and none waits for a wider one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from raycad.model.tokenizer import PAD_ID

DEFAULT_PAD_MULTIPLE = 16


@dataclass(frozen=True)
class PaddingRule:
    """The width of a batch: ``max_length`` always, or its longest record rounded up to ``multiple``."""

    max_length: int
    mode: Literal["max_length", "longest"] = "longest"
    multiple: int = DEFAULT_PAD_MULTIPLE

    def __post_init__(self) -> None:
        if self.mode not in ("max_length", "longest"):
            raise ValueError(f"padding mode {self.mode!r} is not 'max_length' or 'longest'")
        if self.max_length < 1 or self.multiple < 1:
            raise ValueError(f"padding needs max_length >= 1 and multiple >= 1 (got {self.max_length}, "
                             f"{self.multiple})")

    def width(self, longest: int) -> int:
        """Columns of a batch whose longest record has ``longest`` tokens."""
        if self.mode == "max_length":
            return self.max_length
        rounded = -(-max(int(longest), 1) // self.multiple) * self.multiple
        return min(self.max_length, rounded)

    def crop(self, input_ids: Any, lengths: Any | None = None) -> Any:
        """Left-padded ids ``[B, max_length(, 2)]`` (numpy or torch) cut to this batch's width."""
        if self.mode == "max_length" or input_ids.shape[0] == 0:
            return input_ids
        if lengths is None:
            lengths = token_lengths(input_ids)
        width = self.width(int(lengths.max()))
        return input_ids[:, input_ids.shape[1] - width:]

    # ---- raycad.json ----------------------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "padding": self.mode, "pad_multiple": self.multiple}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], source: str = "raycad.json") -> PaddingRule:
        """The rule recorded by `to_meta`. Older exports: ``padding`` absent means max_length, and a
        ``longest`` without ``pad_multiple`` meant the exact longest record (multiple 1)."""
        max_length = meta.get("max_length")
        if not max_length:
            raise ValueError(f"{source}: no max_length; was this model exported by raycad?")
        mode = meta.get("padding") or "max_length"
        multiple = meta.get("pad_multiple") or (1 if mode == "longest" else DEFAULT_PAD_MULTIPLE)
        try:
            return cls(int(max_length), mode, int(multiple))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_config(cls, data: Any, max_length: int) -> PaddingRule:
        """The rule of a `raycad.config.DataSection` for data tokenized to ``max_length``."""
        return cls(int(max_length), data.padding, data.pad_multiple)


def token_lengths(input_ids: Any) -> Any:
    """Non-[PAD] tokens per row of ``[B, L]`` or ``[B, L, 2]`` ids (channel 0 counts)."""
    ids = input_ids[..., 0] if input_ids.ndim == 3 else input_ids
    return (ids != PAD_ID).sum(1)


CPU_BATCH_VALUES = 2 ** 18
"""On CPU a model call holds at most this many hidden values (records x width x d_model x strands, a PS model's
two strands included): the mixer's activations then stay in cache. The demo model (d_model 64, conjoined) gets 8
records a call at 251 bp (1.8x the records/s of 128-record calls, 1 thread) and 2 at 1,024 bp (2.3x); a PS
d_model 256 model 2 at 251 bp (1.8x). Measured in BENCHMARKS.md, "Batch inference"."""


def cpu_tokens_per_call(config: Any, two_strands: bool = False) -> int | None:
    """Tokens (records x width) per model call on CPU under `CPU_BATCH_VALUES` for a model with ``config``
    (``d_model``, ``rcps``), run on both strands when ``two_strands`` (conjoined); None without a ``d_model``."""
    d_model = getattr(config, "d_model", None)
    if not d_model:
        return None
    strands = 2 if two_strands or getattr(config, "rcps", False) else 1
    return max(1, CPU_BATCH_VALUES // (int(d_model) * strands))


def rows_per_call(width: int, batch_size: int, max_tokens: int | None) -> int:
    """Records of ``width`` tokens in one model call: ``batch_size``, or with ``max_tokens`` at most
    ``max_tokens // width`` of them (one at least)."""
    if max_tokens is None:
        return batch_size
    return max(1, min(batch_size, max_tokens // max(width, 1)))


def width_batches(rule: PaddingRule, lengths: np.ndarray, batch_size: int,
                  max_tokens: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(width, row indices) of batches of `rows_per_call` records that all have the same width under ``rule``
    (shortest first, rows in their order within a width): every record is then padded exactly to its own width,
    whatever batch, window or actor it lands in."""
    widths = np.array([rule.width(n) for n in lengths], dtype=np.int64)
    order = np.argsort(widths, kind="stable")
    bounds = np.flatnonzero(np.diff(widths[order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        width = int(widths[group[0]])
        rows = rows_per_call(width, batch_size, max_tokens)
        for start in range(0, len(group), rows):
            yield width, group[start:start + rows]


# ---- length-aware batching for training ------------------------------------------------------------------------
BUCKET_WINDOW_BATCHES = 64
"""Batches per sorting window of `bucket_dataset`: larger windows give tighter buckets, smaller ones more mixing."""


def bucket_batches(batch: dict[str, np.ndarray], *, batch_size: int, rule: PaddingRule, seed: int,
                   min_size: int = 1) -> dict[str, np.ndarray]:
    """A window of tokenized rows -> one row per (global) batch of ``batch_size`` records of similar length.

    Records are ordered by their width under ``rule`` (ties in a seeded order that depends on each record's
    ``key`` only), cut into consecutive runs, and each run is cropped to the width of its own longest
    record. A last run of fewer than ``min_size`` records (the number of DDP ranks that share each batch) joins
    the run before it, so only a window of fewer than ``min_size`` records gives a batch that small. Output
    columns hold one array per batch: ``input_ids`` [b, width] uint8, ``label`` [b] and ``key`` [b]; ``width``
    and ``size`` are plain integers.
    """
    from raycad.data.preprocess import uniform_from_keys

    ids = np.asarray(batch["input_ids"])
    keys = np.asarray(batch["key"], dtype=np.uint64)
    lengths = token_lengths(ids)
    widths = np.array([rule.width(n) for n in lengths], dtype=np.int64) if len(ids) else np.zeros(0, np.int64)
    order = np.lexsort((uniform_from_keys(keys, seed, 0xB0C), widths))
    runs = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if len(runs) > 1 and len(runs[-1]) < min_size:
        runs[-2:] = [np.concatenate(runs[-2:])]
    out: dict[str, list] = {"input_ids": [], "label": [], "key": [], "width": [], "size": []}
    for rows in runs:
        part = rule.crop(ids[rows], lengths[rows])
        out["input_ids"].append(np.ascontiguousarray(part))
        out["label"].append(np.asarray(batch["label"])[rows].astype(np.int64))
        out["key"].append(keys[rows])
        out["width"].append(part.shape[1])
        out["size"].append(len(rows))
    result = {k: _object_array(v) for k, v in out.items() if k not in ("width", "size")}
    result["width"] = np.asarray(out["width"], dtype=np.int64)
    result["size"] = np.asarray(out["size"], dtype=np.int64)
    return result


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def bucket_dataset(ds: Any, *, batch_size: int, rule: PaddingRule, seed: int, ranks: int = 1,
                   window_batches: int = BUCKET_WINDOW_BATCHES) -> Any:
    """A training Dataset of tokenized records -> a Dataset with one row per global batch (`bucket_batches`).

    Not split across Ray Train workers: every rank reads all rows, in the same order (``preserve_order``) and
    the same seeded per-epoch shuffle (`shuffled_rows`), and trains on its slice ``[rank::world]`` of each,
    so DDP ranks take the same number of steps on batches of the same width. ``ranks``: how many share each
    batch (a batch has at least that many records unless its whole window has fewer). Which records share a
    batch is fixed by ``seed`` (the windows and tie-breaks do not change between epochs); the batch order
    changes every epoch.
    """
    out = ds.map_batches(bucket_batches, batch_size=batch_size * window_batches, batch_format="numpy",
                         fn_kwargs={"batch_size": batch_size, "rule": rule, "seed": seed, "min_size": ranks})
    out.context.execution_options.preserve_order = True
    return out


def shuffled_rows(rows: Iterable[Any], buffer: int, seed: int) -> Iterator[Any]:
    """``rows`` through a shuffle buffer of ``buffer`` rows seeded by ``seed``: the same input sequence and seed
    give the same output sequence in every process (what keeps the ranks of `bucket_dataset` in step)."""
    rng = np.random.default_rng(seed)
    pool: list[Any] = []
    for row in rows:
        if len(pool) < buffer:
            pool.append(row)
            continue
        i = int(rng.integers(len(pool)))
        pool[i], row = row, pool[i]
        yield row
    rng.shuffle(pool)
    yield from pool
