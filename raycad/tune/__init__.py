"""Hyper-parameter search per task with Ray Tune + Optuna (TPE) + ASHA: ``raycad tune``.

Public API:

- `SweepConfig` (a `raycad.config.Config`: ``base`` fine-tuning config, ``space``, ``tasks``, ``num_samples``,
  ``seed``, ``trial_workers``, ``gpu``, ``max_concurrent``, ``asha``, ``storage_path``...) and `TaskSpec` for
  users' datasets.
- `run_sweep(cfg) -> SweepResult`: per task, a Tune search whose trials fit the same `TorchTrainer` as
  ``raycad finetune`` (`raycad.train.build_trainer`), then the best checkpoint on the test split; writes
  summary.csv / summary.md / summary.png and ``best_configs/<task>.yaml``. `resume_sweep(dir)` continues an
  interrupted sweep (`Tuner.restore`), keeping finished trials.
- `SearchSpace`, `Range` (the space, with defaults and YAML/JSON overrides), `DefineByRun` (its Optuna
  define-by-run function) and `apply(params, base) -> FinetuneConfig`.
- `PUBLISHED_ACCURACY` / `published_for(task)`: the Caduceus paper's Table 1 (from `raycad.data.tasks`).

Importing this package is cheap; Ray loads with the functions that need it.
"""

from __future__ import annotations

from raycad.data.tasks import PUBLISHED_ACCURACY, published_for
from raycad.tune.space import DefineByRun, Range, SearchSpace, apply, describe
from raycad.tune.sweep import SweepConfig, SweepResult, TaskSpec, resume_sweep, run_sweep

__all__ = [
    "PUBLISHED_ACCURACY",
    "DefineByRun",
    "Range",
    "SearchSpace",
    "SweepConfig",
    "SweepResult",
    "TaskSpec",
    "apply",
    "describe",
    "published_for",
    "resume_sweep",
    "run_sweep",
]
