"""Release each trial's Ray Train worker placement group when Tune finishes or stops the trial.

A trial's `TorchTrainer` runs its controller as a child actor of the Tune trial actor, and the controller
creates the workers' placement group. Placement groups live as long as the *job*, not their creating actor,
so when Tune ends a trial (finished, stopped by ASHA, or failed) the group can outlive it: Ray Train's own
``PlacementGroupCleaner`` only acts when the Ray State API answers (a dashboard is running and exactly one
Ray instance is visible), and on a small machine a single leaked group (1 CPU) starves every later trial
(BENCHMARKS.md, tuning).

`PlacementGroupRecorder` (a Ray Train worker-group callback, inside the controller) records the group of each
worker group it starts in `PlacementGroupRegistry` (a zero-CPU actor owned by the sweep driver);
`ReleasePlacementGroups` (a Tune callback, in the driver) removes a trial's recorded groups that are still
alive once Tune has ended the trial. Both find the registry by name, so they pickle (Tune saves its callbacks
with the experiment, for `Tuner.restore`) without holding an actor handle. `WorkerGroupCallback` comes from
Ray Train V2's private ``_internal`` package: no public hook sees a worker group's placement group.
"""

from __future__ import annotations

from typing import Any

import ray

# Private (Ray Train V2 `_internal`): no public callback sees a worker group or its placement group.
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

from raycad.runtime import get_logger

log = get_logger("raycad.tune")


REGISTRY_NAME = "raycad_tune_placement_groups"
REGISTRY_NAMESPACE = "raycad"


@ray.remote(num_cpus=0)
class PlacementGroupRegistry:
    """trial id -> the placement groups its Ray Train runs created."""

    def __init__(self) -> None:
        self.groups: dict[str, list[PlacementGroup]] = {}

    def add(self, trial_id: str, group: PlacementGroup) -> None:
        self.groups.setdefault(trial_id, []).append(group)

    def pop(self, trial_id: str) -> list[PlacementGroup]:
        return self.groups.pop(trial_id, [])


_DRIVER_HANDLE: Any = None  # a named actor dies with its last handle: the driver keeps this one


def start_registry() -> Any:
    """The driver's registry actor, created once per Ray session and kept alive by the handle held here."""
    global _DRIVER_HANDLE
    try:
        return _registry()
    except ValueError:  # none yet in this Ray session
        _DRIVER_HANDLE = PlacementGroupRegistry.options(name=REGISTRY_NAME, namespace=REGISTRY_NAMESPACE).remote()
        return _DRIVER_HANDLE


def _registry() -> Any:
    return ray.get_actor(REGISTRY_NAME, namespace=REGISTRY_NAMESPACE)


class PlacementGroupRecorder(WorkerGroupCallback):
    """Ray Train controller callback: record every started worker group's placement group for ``trial_id``."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id

    def after_worker_group_start(self, worker_group: Any) -> None:
        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        ray.get(_registry().add.remote(self.trial_id, group))


class ReleasePlacementGroups(Callback):
    """Tune callback: once a trial has ended, remove the placement groups it left behind."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial.trial_id)

    def _release(self, trial_id: str) -> None:
        for group in ray.get(_registry().pop.remote(trial_id)):
            if placement_group_table(group).get("state") != "REMOVED":
                log.debug("trial %s: removing its leftover worker placement group %s", trial_id, group.id.hex())
                remove_placement_group(group)
