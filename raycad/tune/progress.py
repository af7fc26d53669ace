"""A Ray Tune callback that prints a sweep's progress through raycad's rich console: one line per trial epoch.

It lives in its own module (imported only when a sweep runs) so that Tune pickles it by reference.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from raycad.runtime import console
from raycad.tune.space import describe


class TrialProgress(Callback):
    """Trial started / epoch metric / trial finished lines for one task's search."""

    def __init__(self, task: str, metric: str) -> None:
        self.task, self.metric = task, metric

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        console.print(f"[cyan]{self.task}[/] trial {trial.trial_id} started: {describe(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else str(value)
        if "fold" in result:  # a cross-validated trial reports the running mean over its folds
            console.print(f"[cyan]{self.task}[/] trial {trial.trial_id} fold {result['fold']}: "
                          f"{self.metric} {shown} (mean over folds so far)")
            return
        console.print(f"[cyan]{self.task}[/] trial {trial.trial_id} epoch {result.get('epoch')}: "
                      f"{self.metric} {shown}  train_loss {result.get('train_loss', float('nan')):.4f}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        step = f"fold {last['fold']}" if "fold" in last else f"epoch {last.get('epoch')}"
        console.print(f"[cyan]{self.task}[/] trial {trial.trial_id} finished after {step}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        console.print(f"[red]{self.task} trial {trial.trial_id} failed[/]: see {trial.local_path}")
