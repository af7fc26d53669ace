"""Sequences in, token batches out: raycad's data layer on Ray Data.

- `TASKS`, `get_task`, `TaskInfo`: the Genomic Benchmarks tasks (names, aliases, classes, sizes, the
  paper's ``max_length``, Hugging Face ids).
- `prepare_datasets(cfg) -> PreparedData`: lazy, tokenized ``train`` / ``validation`` / ``test`` Ray
  Datasets from the config's data section (a user's URIs, a benchmark task, or the bundled demo), with
  `PreparedData.report` counting records, skipped records by reason and truncations.
- `iter_batches(shard, cfg, split, batch_size, epoch)`: a train worker's torch batches
  (``input_ids``, ``labels``), reverse-complement augmented and shuffled deterministically.
- `read_sequences(uri, options)`: any supported source as a Ray Dataset of ``{sequence, label, id}``, each
  record normalised and validated once by `raycad.data.records` (`RecordError`: the one error of bad input).
- `CaduceusTokenizer` lives in `raycad.model.tokenizer`; the vectorized batch steps in
  `raycad.data.preprocess`.

Importing this package is cheap: Ray is imported by the functions that need it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from raycad.data.tasks import TASKS, TaskInfo, get_task

_LAZY = {
    "prepare_datasets": "raycad.data.loader",
    "iter_batches": "raycad.data.loader",
    "PreparedData": "raycad.data.loader",
    "BatchCollator": "raycad.data.loader",
    "BUNDLED_DEMO": "raycad.data.plan",
    "RecordError": "raycad.data.records",
    "read_sequences": "raycad.data.sources",
}

__all__ = [
    "BUNDLED_DEMO",
    "TASKS",
    "BatchCollator",
    "PreparedData",
    "RecordError",
    "TaskInfo",
    "get_task",
    "iter_batches",
    "prepare_datasets",
    "read_sequences",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
