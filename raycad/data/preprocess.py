"""Vectorized preprocessing of clean records, run inside Ray Data ``map_batches``: keys, splits, tokens.

Records come in as `raycad.data.records.SEQUENCE_SCHEMA` Arrow batches, already normalised and validated
where they were read (`raycad.data.records.clean`), so nothing here checks them again. `add_keys` gives each
record a stable 64-bit ``key`` (a hash of its sequence) that drives the seeded train/validation split
(`split_train_validation`) and the reverse-complement augmentation of the loader, so both are
deterministic whatever order or worker a record takes. `tokenize_batch` turns a batch into fixed-width
left-padded ``input_ids`` (uint8) with the truncation policy of the config, plus the per-record figures
(`STATS_COLUMNS`) that `summarize` counts for the data report and `model_columns` drops.
`conjoin` stacks the [forward, reverse-complement] channels for conjoined models.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raycad.model.tokenizer import CaduceusTokenizer, reverse_complement_ids

STATS_COLUMNS = ("truncated", "n_invalid", "bases")
"""Per-record figures of `tokenize_batch` for the data report (not model inputs)."""

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


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
def tokenize_batch(batch: pa.Table, *, max_length: int,
                   truncation: Literal["left", "right", "center"]) -> dict[str, np.ndarray]:
    """Tokenize one batch of clean records: ``input_ids`` uint8 [N, max_length] (left padding), ``label``
    int64, ``key`` uint64, the record ``id`` (when the batch has one) and `STATS_COLUMNS`.

    ``truncation`` names the side that is cut (see `raycad.config.DataSection.truncation`). Characters
    outside ACGTN that the reader kept (``invalid_chars="unk"``) become [UNK] and are counted in ``n_invalid``
    (RNA's ``U`` is already ``T``: the reader counted those records).
    """
    tokenizer = CaduceusTokenizer(padding_side="left", truncation_side=truncation, invalid="unk")
    enc = tokenizer.encode_batch(batch.column("sequence"), max_length)
    record_ids = {"id": batch.column("id").cast(pa.string()).to_numpy(zero_copy_only=False)} \
        if "id" in batch.column_names else {}
    return {
        **record_ids,
        "input_ids": enc.input_ids,
        "label": pc.fill_null(batch.column("label"), 0).to_numpy().astype(np.int64),
        "key": batch.column("key").to_numpy() if "key" in batch.column_names else np.zeros(len(batch), _U64),
        "truncated": enc.truncated,
        "n_invalid": enc.n_invalid.astype(np.int32),
        "bases": enc.lengths.astype(np.int64),
    }


def model_columns(ds: Any) -> Any:
    """A tokenized dataset without the report's `STATS_COLUMNS`."""
    return ds.drop_columns(list(STATS_COLUMNS))


def summarize(batch: pa.Table, split: str = "") -> dict[str, np.ndarray]:
    """One row per label in the batch: counts of records, truncated records, invalid characters and bases."""
    labels = batch.column("label").to_numpy()
    names, first, inverse = np.unique(labels, return_index=True, return_inverse=True)

    def per_group(column: str) -> np.ndarray:
        values = batch.column(column).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.bincount(inverse, weights=values, minlength=len(names)).astype(np.int64)

    return {"split": np.full(len(names), split),
            "label": labels[first].astype(np.int64),
            "records": np.bincount(inverse, minlength=len(names)),
            "truncated": per_group("truncated"),
            "invalid_characters": per_group("n_invalid"),
            "records_with_invalid": np.bincount(inverse, weights=batch.column("n_invalid").to_numpy() > 0,
                                                minlength=len(names)).astype(np.int64),
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
    labels = batch.column("label").to_numpy()
    mixed = splitmix64(batch.column("key").to_numpy() ^ seed_mix(seed, 0x5EED))
    is_val = has[labels] & (mixed <= limits[labels])
    return batch.append_column("is_validation", pa.array(is_val, pa.bool_()))


def split_train_validation(ds: Any, fraction: float, seed: int, num_classes: int) -> tuple[Any, Any]:
    """Seeded, stratified ``(train, validation)`` split of a keyed dataset of clean records (labels
    ``0..num_classes-1``).

    One pass reads the (label, key) columns to find each class's cut-off; the split itself stays lazy.
    """
    labels, keys = [], []
    for batch in ds.select_columns(["label", "key"]).iter_batches(batch_format="pyarrow", batch_size=65536):
        labels.append(batch.column("label").to_numpy().astype(np.int64))
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
    """Tokens per record (for the default ``max_length`` of a user's data)."""
    _, _, lengths, _ = CaduceusTokenizer._prepare(batch.column("sequence"), "unk")
    return {"length": lengths}
