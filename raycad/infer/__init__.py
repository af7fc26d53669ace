"""Batch inference with a fine-tuned Caduceus on Ray Data: the component behind ``raycad predict``,
``raycad evaluate`` and the test evaluation at the end of ``raycad finetune`` / ``raycad tune``.

- `Predictor` (`raycad.infer.predictor`): the callable class for ``Dataset.map_batches`` over an actor pool.
  It loads the model once per actor (`load_for_inference`: exported directory, training checkpoint, or
  ``ray.train.Checkpoint``), tokenizes as in training (`ModelSpec`, read from ``raycad.json``), batches by
  length and pads by the recorded `raycad.data.batching.PaddingRule`. Subclass it and override
  ``outputs`` / ``columns`` to compute something else per record (embeddings, mutation effects).
- `score(ds, model, ...)`: the lazy dataset of per-record outputs, computed by `Predictor` actors (one GPU
  each with ``use_gpu=True``); `placement` says how many actors and what each gets.
- `predict(model, input, output, ...)`: any input `raycad.data.read_sequences` takes, to a Parquet/CSV file
  in input order with a row number (`PredictSummary`, including how many records were truncated).
- `evaluate(ds, model, num_classes, ...)`: metrics of labelled rows (`Evaluation`, with the actor processes
  that did the work).
- `TableWriter` (`raycad.infer.output`): streaming Parquet/CSV/TSV writer with row numbers (local or s3://).

Importing this package is cheap: torch and Ray load with the functions that need them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Predictor": "raycad.infer.predictor",
    "ModelSpec": "raycad.infer.predictor",
    "load_for_inference": "raycad.infer.predictor",
    "read_spec": "raycad.infer.predictor",
    "score": "raycad.infer.score",
    "placement": "raycad.infer.score",
    "predict": "raycad.infer.score",
    "PredictSummary": "raycad.infer.score",
    "evaluate": "raycad.infer.score",
    "Evaluation": "raycad.infer.score",
    "TableWriter": "raycad.infer.output",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
