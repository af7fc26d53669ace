"""A hyper-parameter sweep per task: Ray Tune + Optuna (TPE) + ASHA over the same trainer as ``raycad finetune``.

For each task of a `SweepConfig`:

1. the task's data is prepared once on the driver (`raycad.data.prepare_datasets`) and, by default,
   materialized into the object store, so trials share the tokenized rows instead of re-reading them;
2. a `ray.tune.Tuner` runs ``num_samples`` trials of a *function* trainable (`_run_trial`): each applies its
   sampled point to the task's `FinetuneConfig` (`raycad.tune.space.apply`) and fits exactly the trainer that
   ``raycad finetune`` fits (`raycad.train.build_trainer`) with `TuneReportCallback`, which forwards every
   epoch's metrics and checkpoint path to Tune. `OptunaSearch` (TPE, seeded, define-by-run space) proposes
   points; `ASHAScheduler` stops poor trials on the validation metric, epoch by epoch;
3. the best trial's best checkpoint is evaluated on the task's test split (`raycad.train.evaluate_checkpoint`,
   conjoined when ``head.conjoin_eval``) and its config is written as a file ``raycad finetune --config``
   accepts.

Resources: a trial's own process only waits on its `TorchTrainer`, so it asks for a sliver of a CPU
(``trial_cpu``; Tune rejects 0); the workers get their own placement group (`resolve_cpus_per_worker`);
Ray Data's tasks run outside those groups and need a whole free CPU each, so concurrency leaves one CPU free
(`default_max_concurrent`) and each task's data is materialized once before its trials start;
`raycad.tune.cleanup` releases a stopped trial's worker placement group. BENCHMARKS.md (tuning) has the
numbers.

An interrupted sweep resumes with `resume_sweep` / ``raycad tune --resume DIR``: finished tasks are kept,
an unfinished task's Tune experiment is restored (`Tuner.restore`: finished trials are kept, interrupted ones
restart and their `TorchTrainer` resumes from its last checkpoint because it reuses the same run name and
storage path). Storage (Tune experiments and trial checkpoints) is local or ``s3://``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from raycad.config import Config, ConfigError, FinetuneConfig, check_run_name
from raycad.runtime import console, get_logger
from raycad.tune.space import SearchSpace, TrialParams, apply, describe

if TYPE_CHECKING:
    from raycad.data import PreparedData

log = get_logger("raycad.tune")

DEMO = "demo"
"""Task name of the bundled demo data (``cfg.data`` with neither ``task`` nor ``train``)."""

VAL_KEYS = ("val_accuracy", "val_f1", "val_mcc", "val_auroc")
TEST_KEYS = ("test_accuracy", "test_f1", "test_mcc", "test_auroc")


# ==== configuration ============================================================================================


class TaskSpec(Config):
    """One task of a sweep: a label plus `data.*` overrides (a user's dataset, or a benchmark task)."""

    name: str
    """Label used in the summary and in file names; also the benchmark task when ``data`` names none."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``base.data`` for this task, e.g. ``{"train": "s3://bucket/train.csv", "test": ...}``."""


class AshaSection(Config):
    """Asynchronous successive halving on the validation metric, one rung step per epoch."""

    enabled: bool = True
    grace_period: int = Field(1, ge=1)
    """Epochs every trial runs before it can be stopped."""
    reduction_factor: float = Field(2.0, gt=1)
    brackets: int = Field(1, ge=1)


class SweepConfig(Config):
    """A tuning sweep: the base fine-tuning config, the search space, the tasks and how to search."""

    base: FinetuneConfig = Field(default_factory=FinetuneConfig)
    """Every trial starts from this config (with the task's data) and applies its sampled point on top."""
    space: SearchSpace = Field(default_factory=SearchSpace)
    tasks: list[str | TaskSpec] = Field(default_factory=lambda: [DEMO])
    """Benchmark task names/aliases, "all" (every Genomic Benchmarks task), "demo" (the bundled data), or
    `TaskSpec` entries for users' datasets."""
    num_samples: int = Field(8, ge=1)
    """Trials per task."""
    seed: int = 0
    """Seeds the TPE sampler (and with it the proposed configurations)."""
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    trial_workers: int | None = Field(None, ge=1)
    """Ray Train workers per trial (None = ``base.scaling.num_workers``)."""
    gpu: bool | None = None
    """Train trials on GPUs (None = ``base.scaling.use_gpu``)."""
    max_concurrent: int | None = Field(None, ge=1)
    """Trials running at once; None = what the cluster holds (`default_max_concurrent`)."""
    trial_cpu: float = Field(0.01, gt=0)
    """CPU reserved for each trial's own process, which only drives its TorchTrainer."""
    asha: AshaSection = Field(default_factory=AshaSection)
    materialize: bool = True
    """Tokenize each task's data once into the object store and share it across trials."""
    evaluate_test: bool = True
    """Evaluate the best trial's best checkpoint on the test split."""
    name: str | None = None
    """Sweep name; None = ``sweep-<timestamp>``. A plain name (a directory under output_dir)."""
    output_dir: str = "raycad_sweeps"
    """Local directory for summaries and best configs: ``<output_dir>/<name>``."""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return check_run_name(name)
    storage_path: str | None = None
    """Where Tune experiments and trial checkpoints go (local path or s3://); None = ``<output_dir>/<name>/ray``."""
    address: str | None = None
    """Ray cluster to join; None = RAY_ADDRESS or a private local instance."""

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if not self.tasks:
            raise ValueError("tasks is empty")
        names = [t.name if isinstance(t, TaskSpec) else t for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique, repeated: {dupes}")
        return self

    def trial_base(self) -> FinetuneConfig:
        """``base`` with the sweep's scaling choices applied (what every trial of every task starts from)."""
        updates: dict[str, Any] = {}
        if self.trial_workers is not None:
            updates["scaling.num_workers"] = self.trial_workers
        if self.gpu is not None:
            updates["scaling.use_gpu"] = self.gpu
        return self.base.with_overrides(updates) if updates else self.base


@dataclasses.dataclass
class TaskRun:
    """A resolved task: its label and the `FinetuneConfig` its trials start from."""

    name: str
    cfg: FinetuneConfig

    @property
    def benchmark(self) -> str | None:
        """The Genomic Benchmarks task behind this entry (the demo data is a split of nontata promoters)."""
        if self.cfg.data.task:
            return self.cfg.data.task
        if not self.cfg.data.train:
            from raycad.data.loader import DEMO_TASK

            return DEMO_TASK
        return None


def resolve_tasks(cfg: SweepConfig) -> list[TaskRun]:
    """Expand "all", check benchmark names, and build each task's starting `FinetuneConfig`."""
    from raycad.data.tasks import TASKS, get_task

    base = cfg.trial_base()
    cfg.space.for_base(base).check_against(base)
    runs: list[TaskRun] = []
    for entry in cfg.tasks:
        if isinstance(entry, TaskSpec):
            data = dict(entry.data)
            if not data.get("train") and not data.get("task") and entry.name != DEMO:
                data["task"] = get_task(entry.name).name
            runs.append(TaskRun(entry.name, _with_data(base, data, entry.name)))
        elif entry == "all":
            runs.extend(TaskRun(name, _with_data(base, {"task": name, "train": None}, name)) for name in TASKS)
        elif entry == DEMO:
            runs.append(TaskRun(DEMO, _with_data(base, {"task": None, "train": None}, DEMO)))
        else:
            name = get_task(entry).name
            runs.append(TaskRun(name, _with_data(base, {"task": name, "train": None}, name)))
    seen: set[str] = set()
    for run in runs:
        if safe_name(run.name) in seen:
            raise ConfigError(f"task {run.name!r} appears twice in the sweep")
        seen.add(safe_name(run.name))
    return runs


def _with_data(base: FinetuneConfig, data: dict[str, Any], label: str) -> FinetuneConfig:
    try:
        return base.with_overrides({f"data.{k}": v for k, v in data.items()})
    except ConfigError as err:
        raise ConfigError(f"task {label!r}: {err}") from None


def safe_name(name: str) -> str:
    """A file-name-safe form of a task label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "task"


# ==== resources ================================================================================================


def default_max_concurrent(cfg: FinetuneConfig, trial_cpu: float, resources: dict[str, float]) -> int:
    """How many trials fit at once while one CPU stays free for Ray Data (and each GPU trial gets its GPUs)."""
    from raycad.train.trainer import resolve_cpus_per_worker

    cpus = float(resources.get("CPU", 0.0))
    per_trial = trial_cpu + cfg.scaling.num_workers * resolve_cpus_per_worker(cfg, cluster_cpus=cpus)
    fit = math.floor((cpus - 1.0) / per_trial + 1e-9) if per_trial > 0 else 1
    if cfg.scaling.use_gpu:
        gpus = float(resources.get("GPU", 0.0))
        need = cfg.scaling.num_workers * cfg.scaling.gpus_per_worker
        if gpus < need:
            raise ConfigError(f"a trial needs {need:g} GPUs but the cluster has {gpus:g}")
        if need > 0:
            fit = min(fit, math.floor(gpus / need + 1e-9))
    return max(1, fit)


def trial_concurrency(cfg: SweepConfig, task_cfg: FinetuneConfig, resources: dict[str, float]) -> int:
    """Trials at once: ``cfg.max_concurrent``, else what fits (`default_max_concurrent`). Asking for more than
    fits is allowed (a cluster may autoscale) but warned about: on a fixed cluster the extra trials only wait."""
    fit = default_max_concurrent(task_cfg, cfg.trial_cpu, resources)
    if cfg.max_concurrent is None:
        return fit
    if cfg.max_concurrent > fit:
        log.warning("max_concurrent=%d but only %d trial(s) fit in this cluster's %g CPUs (%d worker(s) each, one "
                    "CPU kept for Ray Data): the other trials wait for resources unless the cluster grows",
                    cfg.max_concurrent, fit, float(resources.get("CPU", 0.0)), task_cfg.scaling.num_workers)
    return cfg.max_concurrent


# ==== one trial ================================================================================================


def _run_cv_trial(cfg: FinetuneConfig, folds: list[PreparedData], trial_id: str, storage_path: str) -> None:
    """A trial scored by cross-validation: one fit per fold, one after another. After each fold it reports the
    running mean of the folds' best validation metrics (``fold`` = folds done) and, at the end, the mean and
    spread (max - min) of the folds' test metrics."""
    from ray import tune

    from raycad.train import build_trainer, evaluate_checkpoint
    from raycad.train.cv import aggregate
    from raycad.train.trainer import best_checkpoint, length_bucketed

    fold_cfg = cfg.with_overrides({"train.cv_folds": 0})
    metric, mode = cfg.train.early_stopping_metric, cfg.train.early_stopping_mode
    rows = []
    for i, fold in enumerate(folds, start=1):
        train_data, batch_rows = length_bucketed(fold, fold_cfg)
        result = build_trainer(fold_cfg, train_data, name=f"trial_{trial_id}_fold{i}", storage_path=storage_path,
                               train_batch_rows=batch_rows).fit()
        if result.error:
            raise result.error
        checkpoint, best = best_checkpoint(result, metric, mode)
        row = {k: best.get(k) for k in VAL_KEYS}
        if "test" in fold.datasets:
            row.update({k: v for k, v in evaluate_checkpoint(fold_cfg, checkpoint, fold, split="test").items()
                        if k in TEST_KEYS})
        rows.append(row)
        stats = aggregate(rows, list(VAL_KEYS + TEST_KEYS))
        report = {"fold": i, **{k: v["mean"] for k, v in stats.items()},
                  **{f"{k}_spread": v["spread"] for k, v in stats.items()}}
        tune.report(report)


def _run_trial(params: TrialParams, *, base: dict[str, Any], data: PreparedData, num_train: int,
               storage_path: str, log_path: str | None, folds: list[PreparedData] | None = None) -> None:
    """Tune function trainable: fit the ``raycad finetune`` trainer with this trial's parameters (or, with
    ``folds``, one per cross-validation fold: `_run_cv_trial`), on length-bucketed batches when the records'
    widths differ (as ``raycad finetune`` does)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raycad.train import build_trainer
    from raycad.train.trainer import length_bucketed
    from raycad.tune.cleanup import PlacementGroupRecorder

    cfg = apply(params, FinetuneConfig.from_dict(base))
    trial_id = tune.get_context().get_trial_id()
    if log_path:  # a record of every start, so a resumed sweep can show which trials were re-run
        with open(log_path, "a") as fh:
            fh.write(json.dumps({"event": "start", "trial_id": trial_id, "time": time.time()}) + "\n")
    if folds:
        _run_cv_trial(cfg, folds, trial_id, storage_path)
        return
    callbacks = [TuneReportCallback(), PlacementGroupRecorder(trial_id)]
    train_data, batch_rows = length_bucketed(data, cfg)  # this trial's batch size
    trainer = build_trainer(cfg, train_data, callbacks=callbacks, name=f"trial_{trial_id}",
                            storage_path=storage_path, num_train=num_train, train_batch_rows=batch_rows)
    result = trainer.fit()
    if result.error:
        raise result.error


# ==== the sweep ================================================================================================


@dataclasses.dataclass
class SweepResult:
    """What `run_sweep` returns: one summary row per task and where the outputs are."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    paths: dict[str, Path]

    def row(self, task: str) -> dict[str, Any]:
        for row in self.rows:
            if row["task"] == task:
                return row
        raise KeyError(task)


def sweep_dir_of(cfg: SweepConfig) -> Path:
    return Path(cfg.output_dir) / (cfg.name or "sweep")


def run_sweep(cfg: SweepConfig, *, resume: bool = False, show: bool = True) -> SweepResult:
    """Run (or, with ``resume``, continue) the sweep; writes the summary files and returns the rows."""
    from raycad.runtime import init_ray
    from raycad.train.lora import LORA_ON_RANDOM_INIT, lora_on_random_init
    from raycad.tune import summary

    if cfg.name is None:
        cfg = cfg.with_overrides({"name": f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}"})
    out = sweep_dir_of(cfg)
    base = cfg.trial_base()
    space = cfg.space.for_base(base)
    if lora_on_random_init(base, space.method):
        log.warning(LORA_ON_RANDOM_INIT)
    tasks = resolve_tasks(cfg)
    log.info("search space: method %s%s", space.method, "".join(
        f", {name} {getattr(space, name)}" for name in ("preset", "d_model", "n_layer", "epochs", "schedule",
                                                        "rc_augment") if getattr(space, name) is not None))
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        cfg.save(out / "sweep.yaml")
    init_ray(cfg.address)
    rows = []
    for task in tasks:
        done = out / "tasks" / f"{safe_name(task.name)}.json"
        if resume and done.is_file():
            log.info("task %s already finished: keeping its result", task.name)
            rows.append(json.loads(done.read_text()))
            continue
        row = _sweep_task(cfg, task, out, resume=resume, show=show)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(row, indent=2, default=str) + "\n")
        rows.append(row)
    paths = summary.write_summary(out, rows, metric=cfg.metric)
    if show:
        console.print(summary.summary_table(rows))
        console.print(f"summary: {paths['markdown']}   best configs: {out / 'best_configs'}")
    return SweepResult(sweep_dir=out, rows=rows, paths=paths)


def resume_sweep(sweep_dir: str | Path, *, show: bool = True) -> SweepResult:
    """Continue the sweep saved in ``sweep_dir`` (its ``sweep.yaml``), keeping finished tasks and trials."""
    sweep_dir = Path(sweep_dir)
    saved = sweep_dir / "sweep.yaml"
    if not saved.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory: {saved} is missing")
    cfg = SweepConfig.from_file(saved)
    cfg = cfg.with_overrides({"output_dir": str(sweep_dir.parent), "name": sweep_dir.name})
    return run_sweep(cfg, resume=True, show=show)


def saved_trial_states(experiment_dir: str | Path) -> dict[str, str]:
    """Trial id -> status ("TERMINATED", "RUNNING", "ERROR", ...) from a local Tune experiment's saved state.

    Reads the newest ``experiment_state-*.json``, which Tune rewrites as trials progress; {} if none yet.
    """
    files = sorted(Path(experiment_dir).glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except (OSError, json.JSONDecodeError):  # caught mid-write: the caller polls again
        return {}
    out = {}
    for trial_json, _metadata in state.get("trial_data", []):
        trial = json.loads(trial_json)
        out[str(trial.get("trial_id"))] = str(trial.get("status"))
    return out


def _prepare(task: TaskRun, materialize: bool) -> tuple[PreparedData, int]:
    from raycad.data import prepare_datasets

    data = prepare_datasets(task.cfg)
    report = data.report()  # one counting pass: the checks and the training-record count (as finetune does)
    data.check(report)  # a single class, a stray label, non-DNA: an error before any trial
    if materialize:
        data = dataclasses.replace(data, datasets={k: ds.materialize() for k, ds in data.datasets.items()})
    return data, report["splits"]["train"]["records"]


def _sweep_task(cfg: SweepConfig, task: TaskRun, out: Path, *, resume: bool, show: bool) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.data import DataContext

    from raycad.baseline import baseline_step
    from raycad.train.cv import fold_datasets
    from raycad.tune.cleanup import ReleasePlacementGroups, start_registry
    from raycad.tune.progress import TrialProgress

    t0 = time.perf_counter()
    DataContext.get_current().enable_progress_bars = False
    label = safe_name(task.name)
    space = cfg.space.for_base(task.cfg)
    callbacks = [ReleasePlacementGroups()] + ([TrialProgress(task.name, cfg.metric)] if show else [])
    run_config, trial_storage = tune_run_config(cfg, label, out, callbacks=callbacks,
                                                max_failures=task.cfg.run.max_failures)
    fs = run_config.storage_filesystem
    data, num_train = _prepare(task, cfg.materialize)
    log.info("task %s: %d training records, %d classes, max_length %d", task.name, num_train, data.num_classes,
             data.max_length)
    baseline = baseline_step(task.cfg, data)  # the k-mer LR on the task's records (None when disabled)
    cv = task.cfg.train.cv_folds
    folds = fold_datasets(data, cv, task.cfg.train.seed)[0] if cv else None
    concurrent = trial_concurrency(cfg, task.cfg, ray.cluster_resources())
    trials_log = out / "trials" / f"{label}.jsonl"
    trials_log.parent.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, base=task.cfg.to_dict(), data=data, num_train=num_train,
                             storage_path=trial_storage, log_path=str(trials_log.resolve()),
                             folds=folds),
        tune.PlacementGroupFactory([{"CPU": cfg.trial_cpu}]),
    )
    exp_path = f"{run_config.storage_path}/{label}"
    start_registry()
    if resume and tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        log.info("task %s: restoring the interrupted Tune experiment %s", task.name, exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, storage_filesystem=fs,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(cfg, task, space, trainable, concurrent, run_config)
    log.info("task %s: %d trials, %d at a time, up to %d epochs each (ASHA %s)", task.name, cfg.num_samples,
             concurrent, space.max_epochs(task.cfg), "on" if cfg.asha.enabled else "off")
    grid = tuner.fit()
    trials = [_trial_record(r, cfg.metric, cfg.mode) for r in grid]
    return _task_row(cfg, task, data, trials, out, fs, wall=time.perf_counter() - t0, trials_log=trials_log,
                     baseline=baseline)


def tune_run_config(cfg: SweepConfig, label: str, out: Path, *, callbacks: list | None = None,
                    max_failures: int = 0) -> tuple[Any, str]:
    """Tune's `RunConfig` for the task ``label`` of the sweep, and the storage of its trials' checkpoints.

    The sweep's Ray storage is ``<storage_path>/<name>`` (an s3:// one through ``base.storage``'s endpoint and
    region), else ``<out>/ray``: Tune's experiments under ``tune/``, the trials' checkpoints under
    ``train/<label>`` (a URI for s3: each trial builds its filesystem from the same storage section).
    """
    from ray import tune

    from raycad.storage import ray_storage

    root = f"{cfg.storage_path.rstrip('/')}/{cfg.name}" if cfg.storage_path else str(out / "ray")
    path, fs = ray_storage(root, cfg.base.storage.endpoint, cfg.base.storage.region)
    run_config = tune.RunConfig(name=label, storage_path=f"{path}/tune", storage_filesystem=fs,
                                callbacks=callbacks, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=max_failures))
    return run_config, f"{root if fs is not None else path}/train/{label}"


def _new_tuner(cfg: SweepConfig, task: TaskRun, space: Any, trainable: Any, concurrent: int,
               run_config: Any) -> Any:
    """A fresh Tune experiment: Optuna TPE over ``space``, ASHA on the epochs (FIFO when disabled or for
    cross-validated trials, which report per fold)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from raycad.tune.space import DefineByRun

    max_epochs = space.max_epochs(task.cfg)
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=min(cfg.asha.grace_period,
                               max_epochs), reduction_factor=cfg.asha.reduction_factor, brackets=cfg.asha.brackets)
                 if cfg.asha.enabled and not task.cfg.train.cv_folds else FIFOScheduler())
    searcher = OptunaSearch(space=DefineByRun(space), metric=cfg.metric, mode=cfg.mode, seed=cfg.seed)
    return tune.Tuner(trainable, run_config=run_config,
                      tune_config=tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, search_alg=searcher,
                                                  scheduler=scheduler, num_samples=cfg.num_samples,
                                                  max_concurrent_trials=concurrent))


def _trial_record(result: Any, metric: str, mode: str) -> dict[str, Any]:
    """Per trial: parameters, status, epochs run, and its epochs ranked best first (metric, checkpoint path)."""
    df = result.metrics_dataframe
    rows = [] if df is None or df.empty else df.to_dict("records")
    rows = [r for r in rows if _finite(r.get(metric))]
    folds = int(max((r.get("fold", 0) for r in rows if _finite(r.get("fold"))), default=0))
    if folds:  # a cross-validated trial: only the report after its last fold scores it
        rows = [r for r in rows if r.get("fold") == folds]
    sign = 1.0 if mode == "max" else -1.0  # best value first, then the earliest epoch (as raycad finetune)
    ranked = sorted(rows, key=lambda r: (-sign * r[metric], r.get("epoch", 0)))
    keep = (metric, "epoch", "fold", "checkpoint_path", *VAL_KEYS, *TEST_KEYS,
            *(f"{k}_spread" for k in VAL_KEYS + TEST_KEYS))
    return {
        "trial_id": (result.metrics or {}).get("trial_id") or Path(result.path).name,
        "params": dict(result.config or {}),
        "error": repr(result.error) if result.error else None,
        "epochs": folds or int(max((r.get("epoch", 0) for r in rows if _finite(r.get("epoch"))), default=0)),
        "ranked": [{k: _plain(v) for k, v in r.items() if k in keep} for r in ranked],
    }


def _exists(path: str | None, fs: Any) -> bool:
    if not path:
        return False
    if fs is None:
        return Path(path).is_dir()
    import pyarrow.fs

    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _task_row(cfg: SweepConfig, task: TaskRun, data: PreparedData, trials: list[dict[str, Any]], out: Path,
              fs: Any, *, wall: float, trials_log: Path, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    from raycad.data.tasks import published_for

    metric, cv = cfg.metric, task.cfg.train.cv_folds
    for t in trials:  # each trial's own budget (space.epochs samples it), or its folds under cross-validation
        t["budget"] = cv or int(t["params"].get("epochs", task.cfg.train.epochs))
    scored = [t for t in trials if t["ranked"]]
    if not scored:
        errors = "; ".join(t["error"] for t in trials if t["error"]) or "no trial reported a metric"
        raise RuntimeError(f"task {task.name}: no trial finished an epoch ({errors})")
    pick = max if cfg.mode == "max" else min
    best = pick(scored, key=lambda t: t["ranked"][0][metric])
    # The trial's best epoch whose checkpoint Ray Train kept (it keeps `checkpoints_to_keep` by score; ties
    # between epochs can leave only a later one of equal score).
    epoch = next((r for r in best["ranked"] if _exists(r.get("checkpoint_path"), fs)), best["ranked"][0])
    best_cfg = apply(best["params"], task.cfg).with_overrides({"run.name": None})
    config_path = best_cfg.save(out / "best_configs" / f"{safe_name(task.name)}.yaml")
    row: dict[str, Any] = {
        "task": task.name,
        "benchmark": task.benchmark,
        "data_source": data.source,
        "best_trial": best["trial_id"],
        "best_params": best["params"],
        "best_config": describe(best["params"]),
        "best_epoch": epoch.get("epoch"),
        **{k: epoch.get(k) for k in VAL_KEYS},
        "trials": len(trials),
        "trials_completed": sum(1 for t in trials if not t["error"] and t["epochs"] >= t["budget"]),
        "trials_stopped_early": sum(1 for t in trials if not t["error"] and 0 < t["epochs"] < t["budget"]),
        "trials_errored": sum(1 for t in trials if t["error"]),
        "trial_starts": _count_starts(trials_log),
        "epochs_run": sum(t["epochs"] for t in trials),
        "epochs_budget": sum(t["budget"] for t in trials),
        "wall_time_s": round(wall, 1),
        "best_config_file": str(config_path),
        "best_checkpoint": epoch.get("checkpoint_path") if _exists(epoch.get("checkpoint_path"), fs) else None,
        "published": published_for(task.benchmark) if task.cfg.data.task else {},
        "trials_detail": trials,
        **baseline_columns(baseline),
    }
    if cv:  # the trial scored itself: means (and spreads) over its folds' best checkpoints
        from raycad.train.cv import protocol

        row.update({"cv_folds": cv, "protocol": protocol(cv, task.cfg.train.seed),
                    "test_split": "test" if "test" in data.datasets else None,
                    **{k: epoch.get(k) for k in TEST_KEYS},
                    **{f"{k}_spread": epoch.get(f"{k}_spread") for k in VAL_KEYS + TEST_KEYS}})
    elif cfg.evaluate_test and row["best_checkpoint"]:
        row.update(_evaluate_best(best_cfg, row["best_checkpoint"], data, fs))
    elif cfg.evaluate_test:
        log.warning("task %s: the best trial's checkpoints are gone; no test evaluation", task.name)
    return row


def baseline_columns(baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The k-mer baseline's summary columns: its choice, validation accuracy and (test or validation) metrics."""
    if not baseline:
        return {}
    from raycad.baseline import describe

    prefix = "test_" if "test_accuracy" in baseline else "val_"
    return {"baseline": baseline, "baseline_config": describe(baseline),
            "baseline_val_accuracy": baseline.get("val_accuracy"),
            **{f"baseline_test_{k}": baseline.get(f"{prefix}{k}") for k in ("accuracy", "f1", "mcc", "auroc")}}


def _count_starts(trials_log: Path) -> int:
    if not trials_log.is_file():
        return 0
    return sum(1 for line in trials_log.read_text().splitlines() if line.strip())


def _evaluate_best(cfg: FinetuneConfig, checkpoint_path: str, data: PreparedData, fs: Any) -> dict[str, Any]:
    import ray.train

    from raycad.train import evaluate_checkpoint

    split = "test" if "test" in data.datasets else "validation"
    if split != "test":
        log.warning("no test split: the best checkpoint is scored on the validation split")
    checkpoint = ray.train.Checkpoint(checkpoint_path, filesystem=fs)
    metrics = evaluate_checkpoint(cfg, checkpoint, data, split=split)
    prefix = "test_" if split == "test" else "val_"
    return {"test_split": split, **{f"test_{k}": _plain(metrics.get(f"{prefix}{k}"))
                                    for k in ("accuracy", "f1", "mcc", "auroc")}}
