"""Driver-side components of fine-tuning: the `TorchTrainer`, run naming and resuming, data caching and
checkpoint evaluation (the whole job that uses them is `raycad.train.recipe.finetune`).

- `build_trainer(cfg, data, ...)` returns a ready-to-``fit()`` Ray Train V2 `TorchTrainer` running
  `train_loop_per_worker` on ``data``'s train/validation datasets (split evenly across workers), with
  `FailureConfig(max_failures)` and a `CheckpointConfig` that keeps the best checkpoints by the validation
  metric. It has no side effects, so the tune helper can build and fit it inside a Tune trial (with
  ``callbacks=[TuneReportCallback()]``). Re-fitting a trainer with the same name and storage path resumes
  the run from its latest checkpoint.
- `evaluate_checkpoint(cfg, checkpoint, data)` scores a training checkpoint on one split (same actors).
"""

from __future__ import annotations

import dataclasses
import math
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raycad.config import FinetuneConfig, TrainingJobConfig
from raycad.runtime import get_logger

if TYPE_CHECKING:
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from raycad.data import PreparedData

log = get_logger("raycad.train")

DATA_CPU_RESERVE = 1.0
"""CPUs left free for Ray Data when Train workers would otherwise take the whole (CPU-only) cluster."""

MATERIALIZE_MAX_RECORDS = 2_000_000
"""`finetune` keeps tokenized datasets up to this many records (all splits) in the object store."""

SPLIT_PREFIX = {"train": "train_", "validation": "val_", "test": "test_"}


# ---- resuming ----------------------------------------------------------------------------------------------------

RESUME_MAY_CHANGE = ("scaling.", "run.max_failures", "run.checkpoints_to_keep", "run.export_model",
                     "train.eval_batch_size", "train.torch_threads")
"""Config keys a resumed run may change: how it runs, not what it trains."""

ResumePolicy = str
""""refuse" (default: a changed config is an error), "stored" (continue with the stored config), "fresh"."""


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "overrides":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(stored: TrainingJobConfig, new: TrainingJobConfig) -> list[str]:
    """``key: stored -> new`` for every field that differs and that a resume may not change."""
    old, cur = _flat(stored.to_dict()), _flat(new.to_dict())
    return [f"{key}: {old.get(key)!r} -> {cur.get(key)!r}" for key in sorted(set(old) | set(cur))
            if old.get(key) != cur.get(key) and not key.startswith(RESUME_MAY_CHANGE)]


def resolve_resume(cfg: TrainingJobConfig, policy: ResumePolicy = "refuse") -> TrainingJobConfig:
    """The config to run with when ``<output_dir>/<run.name>`` already holds a run (checked before Ray starts);
    the same for fine-tuning and pre-training (the stored ``config.yaml`` is read as ``type(cfg)``).

    A new run, or an unchanged one, runs as given. A changed one is refused listing the differences, unless
    ``policy`` is "stored" (continue with the stored config; only `RESUME_MAY_CHANGE` keys come from ``cfg``)
    or "fresh" (the old run directory is moved aside to ``<name>.replaced-<timestamp>`` and a new run starts).
    """
    from raycad.config import ConfigError

    if cfg.run.name is None:
        return cfg
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return cfg
    stored = type(cfg).from_file(saved)
    differences = config_differences(stored, cfg)
    if not differences:
        return cfg
    if policy == "stored":
        keep = {k: v for k, v in _flat(cfg.to_dict()).items() if k.startswith(RESUME_MAY_CHANGE)}
        log.info("resuming %s with its stored config (ignoring: %s)", cfg.run.name, "; ".join(differences))
        return stored.with_overrides(keep)
    if policy == "fresh":
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        log.info("starting %s afresh; the previous run was moved to %s", cfg.run.name, aside)
        return cfg
    raise ConfigError(f"run {cfg.run.name!r} in {run_dir} was started with a different config "
                      f"({'; '.join(differences)}); resuming would mix the two. Pass --continue-stored to "
                      f"resume it as it was, or --fresh to start over (the old run is kept aside), or "
                      f"choose another --name")


def check_resumed_data(run_dir: Path, class_names: list[str], max_length: int) -> None:
    """Record the classes and length a run trains on (first attempt), or refuse a resume whose data differ."""
    import json

    from raycad.config import ConfigError

    path = run_dir / "data.json"
    current = {"class_names": list(class_names), "max_length": int(max_length)}
    if path.is_file():
        stored = json.loads(path.read_text())
        changed = [f"{k}: {stored.get(k)!r} -> {current[k]!r}" for k in current if stored.get(k) != current[k]]
        if changed:
            raise ConfigError(f"run {run_dir.name!r} was trained on other data ({'; '.join(changed)}): its "
                              f"checkpoints cannot continue on this data; use --fresh or another --name")
        return
    path.write_text(json.dumps(current, indent=2) + "\n")


# ---- trainer -----------------------------------------------------------------------------------------------------


def resolve_cpus_per_worker(cfg: FinetuneConfig, cluster_cpus: float | None = None) -> float:
    """``cfg.scaling.cpus_per_worker``, lowered when CPU-only workers would leave Ray Data no CPU at all.

    On a small machine (2 cores, 2 workers) each worker gets a fraction of a CPU so that
    `DATA_CPU_RESERVE` CPUs stay schedulable for Ray Data's read/tokenize tasks; Ray's CPU resource is
    logical, so workers still use their torch threads.
    """
    cpus = cfg.scaling.cpus_per_worker
    if cfg.scaling.use_gpu:
        return cpus
    if cluster_cpus is None:
        import ray

        cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
    need = cpus * cfg.scaling.num_workers
    if cluster_cpus and need > cluster_cpus - DATA_CPU_RESERVE:
        fitted = math.floor(100 * max(cluster_cpus - DATA_CPU_RESERVE, 0.5) / cfg.scaling.num_workers) / 100
        fitted = max(fitted, 0.01)
        if fitted < cpus:
            log.info("cluster has %g CPUs: giving each of %d workers %.2f CPU (not %g) to leave %g for Ray Data",
                     cluster_cpus, cfg.scaling.num_workers, fitted, cpus, DATA_CPU_RESERVE)
            return fitted
    return cpus


def cache_small_data(data: PreparedData, cfg: FinetuneConfig, total_records: int,
                     max_records: int = MATERIALIZE_MAX_RECORDS) -> bool:
    """Small data: shuffle the training split once (seeded) and keep every split tokenized in the object store.

    Sources are often ordered (by class, by file), and Ray Train only shuffles locally within a buffer
    (`raycad.data.iter_batches`), so a class-sorted file would give single-class batches and shards. A global
    shuffle fixes that; for small data it costs little, and materializing avoids re-reading and
    re-tokenizing every epoch. Returns whether it applied (``total_records <= max_records``).
    """
    if total_records > max_records:
        return False
    data.datasets = {name: (ds.random_shuffle(seed=cfg.train.seed) if name == "train" else ds).materialize()
                     for name, ds in data.datasets.items()}
    return True


def bucket_training_data(data: PreparedData, cfg: FinetuneConfig) -> int | None:
    """Length-bucket the training split (`raycad.data.batching.bucket_dataset`) when ``data.padding`` is
    "longest", ``data.length_buckets`` is on and its records do not all get the same width; returns the
    number of global-batch rows (None when left as records). One pass over the lengths decides.

    Every worker reads the bucketed rows whole (`build_trainer` does not split them) and trains on its share
    of each. They are materialized here, in the object store (spilled to disk when larger), because a Dataset
    that is not split is executed by each worker itself, with Ray Data's share of the CPUs: inside a Tune trial
    that share can be nothing, and the first batch would never come. ``data.length_buckets=false`` streams the
    training split instead (each batch padded to its own longest record, ranks not in step)."""
    from raycad.data.batching import PaddingRule, bucket_dataset

    if cfg.data.padding != "longest" or not cfg.data.length_buckets:
        return None
    rule = PaddingRule.from_config(cfg.data, data.max_length)
    # per-block spans by map tasks, not Dataset.min/max: their shuffle tasks would be pinned to the placement
    # group of a Tune trial (a sliver of one CPU) and never run
    spans = data.datasets["train"].map_batches(_length_span, batch_format="numpy").take_all()
    if not spans:
        return None
    shortest, longest = min(r["shortest"] for r in spans), max(r["longest"] for r in spans)
    if rule.width(shortest) == rule.width(longest):
        return None
    workers = cfg.scaling.num_workers
    global_batch = cfg.train.batch_size // workers * workers
    bucketed = bucket_dataset(data.datasets["train"], batch_size=global_batch, rule=rule, seed=cfg.train.seed,
                              ranks=workers).materialize()
    rows = bucketed.count()
    log.info("length buckets: %d global batches of ~%d records (each of %d worker(s) trains on its share), widths "
             "%d..%d (pad_multiple %d)", rows, global_batch, workers, rule.width(shortest), rule.width(longest),
             rule.multiple)
    data.datasets["train"] = bucketed
    return rows


def _length_span(batch: dict[str, Any]) -> dict[str, list[int]]:
    from raycad.data.batching import token_lengths

    lengths = token_lengths(batch["input_ids"])
    if not len(lengths):
        return {"shortest": [], "longest": []}
    return {"shortest": [int(lengths.min())], "longest": [int(lengths.max())]}


def length_bucketed(data: PreparedData, cfg: FinetuneConfig) -> tuple[PreparedData, int | None]:
    """A copy of ``data`` whose training split is length-bucketed for ``cfg`` (`bucket_training_data`), and its
    batch rows for `build_trainer`; ``data`` itself (shared by tune trials and folds, whose batch sizes may
    differ) is left as it is."""
    copy = dataclasses.replace(data, datasets=dict(data.datasets))
    return copy, bucket_training_data(copy, cfg)


def default_run_name(cfg: FinetuneConfig) -> str:
    base = cfg.data.task or (Path(cfg.data.train).stem.split(".")[0] if cfg.data.train else "demo")
    return f"{base}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_trainer(cfg: FinetuneConfig, data: PreparedData, *, callbacks: list | None = None,
                  name: str | None = None, storage_path: str | None = None, num_train: int | None = None,
                  train_loop=None, train_batch_rows: int | None = None) -> TorchTrainer:
    """A Ray Train V2 `TorchTrainer` for ``cfg`` on ``data`` (train + validation), ready to ``fit()``.

    ``num_train`` (the training-set size, for the LR schedule) is counted when not given. ``train_loop``
    replaces `train_loop_per_worker` (tests use it to inject failures). ``train_batch_rows``: the number of
    rows of a length-bucketed training set (`bucket_training_data`; one row per global batch, not split across
    workers).
    """
    from raycad.train.loop import train_loop_per_worker

    for split in ("train", "validation"):
        if split not in data.datasets:
            raise ValueError(f"prepared data has no {split!r} split (has {sorted(data.datasets)})")
    name = name or cfg.run.name or default_run_name(cfg)
    if num_train is None:
        num_train = data.datasets["train"].count()
    if num_train < cfg.scaling.num_workers:
        raise ValueError(f"{num_train} training records cannot be split across {cfg.scaling.num_workers} workers")
    loop_config = {
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "max_length": data.max_length,
        "num_train": int(num_train),
        "train_batch_rows": train_batch_rows,
    }
    return make_torch_trainer(
        cfg, train_loop or train_loop_per_worker, loop_config,
        {"train": data.datasets["train"], "validation": data.datasets["validation"]}, name=name,
        storage_path=storage_path, callbacks=callbacks,
        score=(cfg.train.early_stopping_metric, cfg.train.early_stopping_mode),
        split=["validation"] if train_batch_rows else None)


def make_torch_trainer(cfg: Any, loop: Any, loop_config: dict[str, Any], datasets: dict[str, Any], *, name: str,
                       storage_path: str | None = None, callbacks: list | None = None,
                       score: tuple[str, str] | None = None, split: list[str] | None = None) -> TorchTrainer:
    """The `TorchTrainer` of a run config (`FinetuneConfig` or `PretrainConfig`): workers and their resources
    from ``cfg.scaling``, storage, `FailureConfig` and checkpoint retention from ``cfg.run``.

    The loop receives ``{**loop_config, "cfg": cfg.to_dict(), "cpus_per_worker"}``; ``datasets`` (those named
    in ``split``; default all) are split evenly across workers, the others read whole by every worker.
    ``score=(metric, mode)`` keeps the best checkpoints by that metric, None the latest.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from raycad.storage import ray_storage

    run_dir = Path(cfg.run.output_dir) / name
    path, fs = ray_storage(storage_path or cfg.run.storage_path or str(run_dir / "ray"), cfg.storage.endpoint,
                           cfg.storage.region)
    cpus = resolve_cpus_per_worker(cfg)
    resources: dict[str, float] = {"CPU": cpus}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    metric, mode = score or (None, "max")
    return TorchTrainer(
        loop,
        train_loop_config={**loop_config, "cfg": cfg.to_dict(), "cpus_per_worker": cpus},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.checkpoints_to_keep,
                                                         checkpoint_score_attribute=metric,
                                                         checkpoint_score_order=mode),
            callbacks=callbacks or None,
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=list(datasets) if split is None else split),
    )


# ---- evaluation --------------------------------------------------------------------------------------------------


def evaluate_checkpoint(cfg: FinetuneConfig, checkpoint: ray.train.Checkpoint | str | os.PathLike,
                        data: PreparedData | ray.data.Dataset, split: str = "test",
                        num_classes: int | None = None) -> dict[str, Any]:
    """Metrics of a training checkpoint on ``split`` (keys prefixed ``test_``/``val_``).

    ``data`` is a `PreparedData` (its ``split`` dataset is used) or a tokenized Ray Dataset. The model runs
    in `raycad.infer.Predictor` actors (a GPU each with ``cfg.scaling.use_gpu``), not in this process;
    conjoining and padding follow the checkpoint's config (`raycad.infer.ModelSpec`).
    """
    return evaluate_split(cfg, checkpoint, data, split, num_classes).metrics


def evaluate_split(cfg: FinetuneConfig, model: Any, data: PreparedData | ray.data.Dataset, split: str,
                   num_classes: int | None = None) -> Any:
    """`raycad.infer.evaluate` of ``model`` (checkpoint or exported directory) on one split of ``data``;
    returns the `raycad.infer.Evaluation` (metrics and the actor processes that computed them)."""
    from raycad.infer import evaluate

    dataset = data.datasets.get(split) if hasattr(data, "datasets") else data
    if dataset is None:
        raise ValueError(f"prepared data has no {split!r} split (has {sorted(data.datasets)})")
    num_classes = num_classes or getattr(data, "num_classes", None)
    if num_classes is None:
        from raycad.infer import read_spec

        num_classes = len(read_spec(model).class_names)
    return evaluate(dataset, model, num_classes, prefix=SPLIT_PREFIX.get(split, f"{split}_"),
                    batch_size=cfg.train.eval_batch_size, use_gpu=cfg.scaling.use_gpu)


# ---- runs ---------------------------------------------------------------------------------------------------------


def best_checkpoint(result: Any, metric: str, mode: str) -> tuple[Any, dict[str, Any]]:
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if m.get(metric) is not None
                  and not math.isnan(m[metric])]
    if not candidates:
        if result.checkpoint is None:
            raise RuntimeError("training finished without reporting a checkpoint")
        return result.checkpoint, dict(result.metrics or {})
    pick = max if mode == "max" else min
    return pick(candidates, key=lambda cm: (cm[1][metric], -cm[1].get("epoch", 0)))


def start_run(cfg: Any, default_name: str, *, save_config: bool = True) -> tuple[Any, str, Path]:
    """Name the run (``cfg.run.name`` or ``default_name``), create ``<output_dir>/<name>`` (holding the run's
    ``config.yaml`` unless ``save_config`` is False: the caller writes it later), start or join Ray; returns
    ``(cfg with run.name set, name, run_dir)``."""
    from ray.data import DataContext

    from raycad.runtime import init_ray

    name = cfg.run.name or default_name
    cfg = cfg.with_overrides({"run.name": name})
    run_dir = Path(cfg.run.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    if save_config:
        cfg.save(run_dir / "config.yaml")
    init_ray()
    DataContext.get_current().enable_progress_bars = False  # the run's own progress lines are the display
    return cfg, name, run_dir
