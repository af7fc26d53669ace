"""Fine-tuning Caduceus on Ray Train (V2 `TorchTrainer`, DDP, Ray Data ingest).

Public API:

- `finetune(cfg) -> FinetuneResult`: the whole job (``raycad finetune``): prepare data, fit, evaluate the best
  checkpoint on the test split, write ``results.json`` / ``metrics.csv`` / ``learning_curve.png`` and export
  the model (LoRA merged) as a Hugging Face-style directory under ``<run.output_dir>/<run.name>/model``.
- `evaluate(model_dir, data) -> Evaluated`: metrics of an exported model on a task, a URI or the demo.
- `build_trainer(cfg, data, *, callbacks=None, name=None, storage_path=None) -> TorchTrainer`: the trainer
  alone, e.g. to fit inside a Ray Tune trial with ``callbacks=[TuneReportCallback()]``.
- `train_loop_per_worker(config)`: the per-worker function (reports "epoch", "train_loss", "val_loss",
  "val_accuracy", "val_f1", "val_mcc", "val_auroc", ... every epoch with a checkpoint).
- `evaluate_checkpoint(cfg, checkpoint, data, split="test") -> dict` (on `raycad.infer` actors).
- `build_model(cfg, num_classes)` (`raycad.train.build`): the run's classifier, LoRA applied if configured.
- `load_model_from_checkpoint(checkpoint)`, `export_model(model, dir, meta=...)`, `load_exported(dir)`.
- `apply_lora`, `merge_lora`, `count_parameters` (see `raycad.train.lora` on the tied bidirectional
  projections: one adapter serves both directions, as one weight does).
- `EvalAccumulator`: metric counts that all-reduce across workers.
- Prediction and evaluation on Ray Data actors live in `raycad.infer`.

Importing this package is cheap; Ray and torch load with the functions that need them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "finetune": "raycad.train.recipe",
    "build_trainer": "raycad.train.trainer",
    "evaluate_checkpoint": "raycad.train.trainer",
    "FinetuneResult": "raycad.train.recipe",
    "evaluate": "raycad.train.recipe",
    "train_loop_per_worker": "raycad.train.loop",
    "load_model_from_checkpoint": "raycad.train.checkpoint",
    "build_model": "raycad.train.build",
    "export_model": "raycad.train.checkpoint",
    "load_exported": "raycad.train.checkpoint",
    "apply_lora": "raycad.train.lora",
    "merge_lora": "raycad.train.lora",
    "count_parameters": "raycad.train.lora",
    "EvalAccumulator": "raycad.train.metrics",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
