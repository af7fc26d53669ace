"""Vectorized preprocessing of sequence records, run inside Ray Data ``map_batches``.

Records come in as ``{sequence: str, label: int, id: str (optional)}`` Arrow batches. `add_keys` gives each
record a stable 64-bit ``key`` (a hash of its sequence) that drives the seeded train/validation split
(`split_train_validation`) and the reverse-complement augmentation of the loader, so both are
deterministic whatever order or worker a record takes. `tokenize_batch` turns a batch into fixed-width
left-padded ``input_ids`` (uint8) with the truncation policy of the config, and marks each record with a
``status``: "" when usable, else the reason it cannot be (see `SKIP_REASONS`). With
``bad_records="error"`` the first bad record raises `DataError` naming the source, the record and the
problem; with ``"skip"`` bad records are filtered out by `usable` and counted by `summarize`.
`conjoin` stacks the [forward, reverse-complement] channels for conjoined models.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raycad.data.records import RecordError, rna_to_dna
from raycad.model.tokenizer import CaduceusTokenizer, reverse_complement_ids

SKIP_REASONS = ("empty_sequence", "invalid_characters", "missing_label", "unknown_label", "label_out_of_range")
STATUS_COLUMNS = ("status", "truncated", "n_invalid", "rna", "bases")

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


class DataError(RecordError):
    """Bad input data; the message names the source (file/URI), the record and the problem."""


# ---- hashing -----------------------------------------------------------------------------------------------------
def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a well-mixed uint64 for every uint64 input (vectorized, wraps mod 2**64)."""
    x = np.asarray(x, dtype=_U64).copy()
    with np.errstate(over="ignore"):
        x += _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def seed_mix(*parts: int) -> np.uint64:
    """Fold integers (seed, epoch, ...) into one uint64 salt."""
    salt = _U64(0)
    for part in parts:
        salt = splitmix64(np.array([salt ^ _U64(int(part) & _MASK64)]))[0]
    return salt


def uniform_from_keys(keys: np.ndarray, *salt: int) -> np.ndarray:
    """A float in [0, 1) per key, a pure function of (key, salt)."""
    return (splitmix64(np.asarray(keys, dtype=_U64) ^ seed_mix(*salt)) >> _U64(11)) * (1.0 / (1 << 53))


def add_keys(batch: pa.Table) -> pa.Table:
    """Append ``key`` (uint64): a hash of each record's sequence, stable across processes and runs."""
    import pandas as pd

    sequences = batch.column("sequence").to_numpy(zero_copy_only=False)
    keys = pd.util.hash_array(sequences.astype(object), categorize=False)
    return batch.append_column("key", pa.array(keys, pa.uint64()))


# ---- tokenization ------------------------------------------------------------------------------------------------
def tokenize_batch(batch: pa.Table, *, max_length: int, truncation: Literal["left", "right", "center"],
                   invalid_chars: Literal["unk", "n", "reject"], bad_records: Literal["error", "skip"],
                   class_names: list[str], source: str) -> dict[str, np.ndarray]:
    """Tokenize one Arrow batch: ``input_ids`` uint8 [N, max_length] (left padding), ``label`` int64,
    ``key`` uint64, the record ``id`` (as a string, when the batch has one) and the bookkeeping columns
    ``status``, ``truncated``, ``n_invalid``.

    ``truncation`` names the side that is cut (see `raycad.config.DataSection.truncation`).
    """
    num_classes = len(class_names)
    tokenizer = CaduceusTokenizer(padding_side="left", truncation_side=truncation,
                                  invalid="n" if invalid_chars == "n" else "unk")
    sequences = batch.column("sequence")
    if sequences.null_count:
        sequences = pc.fill_null(sequences, "")
    sequences, rna = rna_to_dna(sequences)
    enc = tokenizer.encode_batch(sequences, max_length)
    labels, label_status = _labels(batch.column("label"), class_names)

    status = np.full(len(batch), "", dtype=object)
    checks = (
        (enc.lengths == 0, "empty_sequence"),
        ((enc.n_invalid > 0) if invalid_chars == "reject" else None, "invalid_characters"),
        (label_status == 1, "missing_label"),
        (label_status == 2, "unknown_label"),
        ((labels < 0) | (labels >= num_classes), "label_out_of_range"),
    )
    for mask, reason in checks:
        if mask is not None:
            status[(status == "") & mask] = reason
    bad = np.flatnonzero(status != "")
    if len(bad) and bad_records == "error":
        row = int(bad[0])
        raise DataError(f"{source}: record {_record_name(batch, row)}: {_describe(status[row], batch, row, enc, labels, class_names)} "
                        f"({len(bad)} bad record(s) in this batch; set data.bad_records=skip to drop and count them)")
    labels = np.where(status == "", labels, 0)
    record_ids = {"id": batch.column("id").cast(pa.string()).to_numpy(zero_copy_only=False)} \
        if "id" in batch.column_names else {}
    return {
        **record_ids,
        "input_ids": enc.input_ids,
        "label": labels.astype(np.int64),
        "key": batch.column("key").to_numpy() if "key" in batch.column_names else np.zeros(len(batch), _U64),
        "status": status.astype(str),
        "truncated": enc.truncated & (status == ""),
        "n_invalid": enc.n_invalid.astype(np.int32),
        "rna": rna,
        "bases": enc.lengths.astype(np.int64),
    }


def _labels(column: pa.ChunkedArray, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Label ids (int64) and a status per record: 0 ok, 1 missing, 2 a class name not in ``class_names``."""
    status = np.asarray(column.is_null(), dtype=np.int8)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        index = pc.index_in(column, value_set=pa.array(class_names, pa.string()))
        unknown = np.asarray(index.is_null(), dtype=bool) & (status == 0)
        status[unknown] = 2
        return pc.fill_null(index, -1).to_numpy().astype(np.int64), status
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"label column has type {column.type}; expected integer ids or class-name strings")
    labels = pc.fill_null(column, 0).to_numpy().astype(np.int64)
    return labels, status


def _record_name(batch: pa.Table, row: int) -> str:
    if "id" in batch.column_names:
        return repr(batch.column("id")[row].as_py())
    return f"#{row} of a batch"


def _describe(reason: str, batch: pa.Table, row: int, enc: Any, labels: np.ndarray,
              class_names: list[str]) -> str:
    if reason == "empty_sequence":
        return "empty sequence"
    if reason == "invalid_characters":
        return (f"{int(enc.n_invalid[row])} character(s) outside ACGTN and data.invalid_chars=reject "
                f"(use 'unk' or 'n' to map them)")
    if reason == "missing_label":
        return "missing label"
    if reason == "unknown_label":
        return f"label {batch.column('label')[row].as_py()!r} is not one of the class names {class_names}"
    return f"label id {int(labels[row])} outside 0..{len(class_names) - 1} (classes {class_names})"


def usable(ds: Any) -> Any:
    """The records whose status is empty, without the bookkeeping columns."""
    from ray.data.expressions import col

    return ds.filter(expr=col("status") == "").drop_columns(list(STATUS_COLUMNS))


def summarize(batch: pa.Table, split: str = "") -> dict[str, np.ndarray]:
    """One row per (status, label) in the batch: counts of records, truncated records, invalid characters,
    RNA records (U read as T) and bases."""
    status = batch.column("status").to_numpy(zero_copy_only=False).astype(str)
    labels = batch.column("label").to_numpy()
    keys = np.char.add(np.char.add(status, "\t"), labels.astype(str))
    names, first, inverse = np.unique(keys, return_index=True, return_inverse=True)

    def per_group(column: str) -> np.ndarray:
        values = batch.column(column).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.bincount(inverse, weights=values, minlength=len(names)).astype(np.int64)

    return {"split": np.full(len(names), split),
            "status": status[first],
            "label": labels[first].astype(np.int64),
            "records": np.bincount(inverse, minlength=len(names)),
            "truncated": per_group("truncated"),
            "invalid_characters": per_group("n_invalid"),
            "records_with_invalid": np.bincount(inverse, weights=batch.column("n_invalid").to_numpy() > 0,
                                                minlength=len(names)).astype(np.int64),
            "rna_records": per_group("rna"),
            "bases": per_group("bases")}


# ---- splits ------------------------------------------------------------------------------------------------------
def validation_thresholds(labels: np.ndarray, keys: np.ndarray, fraction: float, seed: int,
                          num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the largest salted key that goes to validation, and whether the class has any.

    The ``round(fraction * n_c)`` smallest salted keys of each class form the validation split, so the
    split is stratified, seeded, and the same whatever order the records arrive in.
    """
    mixed = splitmix64(np.asarray(keys, dtype=_U64) ^ seed_mix(seed, 0x5EED))
    limits = np.zeros(num_classes, dtype=_U64)
    has = np.zeros(num_classes, dtype=bool)
    for label in range(num_classes):
        values = mixed[labels == label]
        count = round(fraction * len(values))
        if count:
            limits[label] = np.partition(values, count - 1)[count - 1]
            has[label] = True
    return limits, has


def mark_validation(batch: pa.Table, *, limits: np.ndarray, has: np.ndarray, seed: int) -> pa.Table:
    """Append ``is_validation`` (bool) from the per-class limits of `validation_thresholds`."""
    labels = batch.column("label")
    keys = batch.column("key").to_numpy()
    mixed = splitmix64(keys ^ seed_mix(seed, 0x5EED))
    label_ids = pc.fill_null(labels, -1).to_numpy().astype(np.int64) if pa.types.is_integer(labels.type) \
        else np.full(len(batch), -1, dtype=np.int64)
    valid = (label_ids >= 0) & (label_ids < len(limits))
    safe = np.where(valid, label_ids, 0)
    is_val = valid & has[safe] & (mixed <= limits[safe])
    return batch.append_column("is_validation", pa.array(is_val, pa.bool_()))


def split_train_validation(ds: Any, fraction: float, seed: int, num_classes: int) -> tuple[Any, Any]:
    """Seeded, stratified ``(train, validation)`` split of a keyed dataset with integer labels.

    One pass reads the (label, key) columns to find each class's cut-off; the split itself stays lazy.
    Records with a missing or out-of-range label stay in train, where tokenization reports them.
    """
    labels, keys = [], []
    for batch in ds.select_columns(["label", "key"]).iter_batches(batch_format="pyarrow", batch_size=65536):
        column = batch.column("label")
        labels.append(pc.fill_null(column, -1).to_numpy().astype(np.int64)
                      if pa.types.is_integer(column.type) else np.full(len(column), -1, np.int64))
        keys.append(batch.column("key").to_numpy())
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    keys_all = np.concatenate(keys) if keys else np.zeros(0, _U64)
    limits, has = validation_thresholds(labels_all, keys_all, fraction, seed, num_classes)
    from ray.data.expressions import col

    marked = ds.map_batches(mark_validation, batch_format="pyarrow", fn_kwargs={"limits": limits, "has": has,
                                                                                  "seed": seed})
    train = marked.filter(expr=col("is_validation") == False).drop_columns(["is_validation"])
    validation = marked.filter(expr=col("is_validation") == True).drop_columns(["is_validation"])
    return train, validation


# ---- channels ----------------------------------------------------------------------------------------------------
def conjoin(input_ids: Any) -> Any:
    """``[B, L]`` ids -> ``[B, L, 2]``: channel 0 the input, channel 1 its exact reverse complement."""
    rc = reverse_complement_ids(input_ids)
    if isinstance(input_ids, np.ndarray):
        return np.stack([input_ids, rc], axis=-1)
    import torch

    return torch.stack([input_ids, rc], dim=-1)


def longest_sequence(batch: pa.Table) -> dict[str, np.ndarray]:
    """Tokens per record after normalization (for the default ``max_length`` of a user's data)."""
    sequences = batch.column("sequence")
    if sequences.null_count:
        sequences = pc.fill_null(sequences, "")
    _, _, lengths, _ = CaduceusTokenizer._prepare(sequences, "unk")
    return {"length": lengths}
