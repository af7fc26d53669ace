"""The records of a run's splits on the driver: record ids written to ``splits/``, duplicates across splits
counted, and stratified, seeded cross-validation folds.

- `collect_records(data)`: one pass over every prepared split: ids, labels and a hash of each tokenized row
  and of its reverse complement (all records), token ids of the first ``input_ids_limit`` records (the
  k-mer baseline's input).
- `write_splits(records, out_dir)`: ``<split>.csv`` of ``id,label`` per split, so a result can be re-scored
  on exactly the same records later.
- `count_duplicates(records)`: per pair of splits, records of the later split whose tokenized sequence
  (after truncation: what the model sees) also occurs in the earlier one, exactly or as its reverse
  complement. Leakage from train into test inflates test metrics; it is reported, never silently fixed.
- `fold_of(labels, keys, k, seed)`: the cross-validation fold of each record: within each class, records are
  ordered by a seeded hash of their sequence key and cut into ``k`` equal parts, so folds are stratified,
  reproducible, independent of record order, and identical sequences always share a fold.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raycad.data.preprocess import seed_mix, splitmix64
from raycad.model.tokenizer import reverse_complement_ids

if TYPE_CHECKING:
    from raycad.data.loader import PreparedData

SPLIT_ORDER = ("train", "validation", "test")


@dataclass
class SplitRecords:
    """One split's tokenized records on the driver.

    ``labels``, ``ids``, ``hashes`` and ``rc_hashes`` cover every record; ``input_ids`` (uint8, left-padded)
    the first ``len(input_ids)`` of them (all unless a limit was given).
    """

    input_ids: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    hashes: np.ndarray | None = None
    rc_hashes: np.ndarray | None = None
    keys: np.ndarray | None = None
    """The pipeline's per-record ``key`` (a hash of the raw sequence; drives augmentation and folds)."""

    def __post_init__(self) -> None:
        self.labels = np.array(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)


def row_hashes(input_ids: np.ndarray) -> np.ndarray:
    """A uint64 hash of each token-id row (stable across processes)."""
    import pandas as pd

    rows = np.ascontiguousarray(input_ids, dtype=np.uint8)
    if rows.size == 0:
        return np.zeros(len(rows), dtype=np.uint64)
    as_bytes = rows.view(np.dtype((np.bytes_, rows.shape[1]))).ravel()
    return pd.util.hash_array(as_bytes.astype(object), categorize=False)


def collect_split(ds: Any, input_ids_limit: int | None = None) -> SplitRecords:
    """The records of a tokenized Ray Dataset (``input_ids``, ``label``, optional ``id``)."""
    chunks: dict[str, list[np.ndarray]] = {"input_ids": [], "labels": [], "ids": [], "hashes": [], "rc": [],
                                           "keys": []}
    kept = 0
    for batch in ds.iter_batches(batch_format="numpy", batch_size=8192):
        ids = np.asarray(batch["input_ids"], dtype=np.uint8)
        chunks["labels"].append(np.asarray(batch["label"]))
        chunks["hashes"].append(row_hashes(ids))
        chunks["rc"].append(row_hashes(reverse_complement_ids(ids, padding_side="left")))
        if "id" in batch:
            chunks["ids"].append(np.asarray(batch["id"]).astype(str))
        if "key" in batch:
            chunks["keys"].append(np.asarray(batch["key"], dtype=np.uint64))
        keep = len(ids) if input_ids_limit is None else max(0, min(len(ids), input_ids_limit - kept))
        if keep:
            chunks["input_ids"].append(ids[:keep])
            kept += keep
    if not chunks["labels"]:
        empty = np.zeros(0, np.uint64)
        return SplitRecords(np.zeros((0, 0), np.uint8), np.zeros(0, np.int64), None, empty, empty, empty)
    input_ids = np.concatenate(chunks["input_ids"]) if chunks["input_ids"] else np.zeros((0, 0), np.uint8)
    return SplitRecords(input_ids, np.concatenate(chunks["labels"]),
                        np.concatenate(chunks["ids"]) if chunks["ids"] else None,
                        np.concatenate(chunks["hashes"]), np.concatenate(chunks["rc"]),
                        np.concatenate(chunks["keys"]) if chunks["keys"] else None)


def collect_records(data: PreparedData, input_ids_limit: int | None = None) -> dict[str, SplitRecords]:
    """`collect_split` of every split of ``data`` (token ids of at most ``input_ids_limit`` records each)."""
    return {name: collect_split(ds, input_ids_limit) for name, ds in data.datasets.items()}


def write_splits(records: dict[str, SplitRecords], out_dir: str | Path) -> Path:
    """``<out_dir>/<split>.csv`` with the ``id`` and ``label`` of every record (``id`` empty when the source
    has none; the row order is the split's order)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rec in records.items():
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "label"])
            names = rec.ids if rec.ids is not None else [""] * len(rec)
            writer.writerows(zip(names, rec.labels.tolist()))
    return out


def count_duplicates(records: dict[str, SplitRecords]) -> dict[str, dict[str, int]]:
    """Per pair ``"train/test"`` etc.: records of the second split whose sequence occurs in the first split
    exactly (``exact``) or only as a reverse complement (``reverse_complement``), and how many records
    the second split has (``records``)."""
    names = [n for n in SPLIT_ORDER if n in records] + [n for n in records if n not in SPLIT_ORDER]
    out: dict[str, dict[str, int]] = {}
    for i, first in enumerate(names):
        seen = set(records[first].hashes.tolist())
        for second in names[i + 1:]:
            rec = records[second]
            exact = np.fromiter((h in seen for h in rec.hashes.tolist()), bool, len(rec))
            rc = np.fromiter((h in seen for h in rec.rc_hashes.tolist()), bool, len(rec))
            out[f"{first}/{second}"] = {"records": len(rec), "exact": int(exact.sum()),
                                        "reverse_complement": int((rc & ~exact).sum())}
    return out


def audit_splits(records: dict[str, SplitRecords], out_dir: str | Path) -> dict[str, Any]:
    """Write the record ids (`write_splits`) and count duplicates across splits; returns the report."""
    from raycad.runtime import get_logger

    path = write_splits(records, out_dir)
    duplicates = count_duplicates(records)
    for pair, counts in duplicates.items():
        if counts["exact"] or counts["reverse_complement"]:
            get_logger("raycad.data").warning(
                "%s: %d of %d %s records repeat a %s sequence exactly and %d as its reverse complement",
                pair, counts["exact"], counts["records"], pair.split("/")[1], pair.split("/")[0],
                counts["reverse_complement"])
    return {"splits_dir": str(path), "duplicates": duplicates}


def fold_of(labels: np.ndarray, keys: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cross-validation fold (0..k-1) of each record: stratified by label, seeded, order-independent."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    labels = np.asarray(labels, dtype=np.int64)
    mixed = splitmix64(np.asarray(keys, dtype=np.uint64) ^ seed_mix(seed, 0xC5F0))
    folds = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # Order by (salted key, key), so identical sequences are adjacent, and cut into k equal parts; a run of
        # identical keys takes the fold of its first record.
        order = members[np.lexsort((np.asarray(keys)[members], mixed[members]))]
        ordered = np.asarray(keys)[order]
        starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
        first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        folds[order] = first * k // len(order)
    return folds
