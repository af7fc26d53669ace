"""Whole fine-tuning jobs, built from the components beside them (`raycad.train.trainer`, `.checkpoint`, ...).

- `finetune(cfg)` (``raycad finetune``): prepare data, write each split's record ids to ``splits/`` and count
  duplicates across splits (`raycad.data.splits`), fit the k-mer baseline (`raycad.baseline`) on the same
  records, fit, evaluate the best checkpoint on the test split on `raycad.infer` actors (post-hoc RC
  conjoining when ``cfg.head.conjoin_eval``), write results.json / metrics.csv / the learning curve, export
  the model (LoRA merged) as a Hugging Face-style directory, and publish the outputs next to remote
  checkpoints (`raycad.storage.publish_run`).
- `evaluate(model_dir, data)` (``raycad evaluate``): metrics of an exported model or a training checkpoint on
  a task, a URI or the bundled demo, with the data options the model was trained with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raycad.config import FinetuneConfig
from raycad.runtime import console, get_logger

if TYPE_CHECKING:
    from raycad.data import PreparedData

log = get_logger("raycad.train")


@dataclass
class FinetuneResult:
    """What `finetune` produced: metrics, the per-epoch history and where everything was written."""

    run_dir: Path
    test_metrics: dict[str, Any]
    best_val_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    best_checkpoint: str | None
    model_dir: Path | None
    results: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class _Prepared:
    cfg: FinetuneConfig
    name: str
    run_dir: Path
    data: PreparedData
    report: dict[str, Any]
    counts: dict[str, int]


@dataclass
class _Fitted:
    checkpoint: Any
    metrics: dict[str, Any]
    """The best checkpoint's reported validation metrics."""
    history: list[dict[str, Any]]
    stopped_early: bool
    ray_path: str
    seconds: float
    model: Any
    """The best checkpoint's model (LoRA not merged)."""


def finetune(cfg: FinetuneConfig, *, show: bool = True, data: PreparedData | None = None,
             data_report: dict[str, Any] | None = None, plan: Any = None) -> FinetuneResult:
    """Fine-tune as configured and write everything to ``<cfg.run.output_dir>/<run name>`` (see module doc).

    With ``train.cv_folds`` >= 2 this is k-fold cross-validation (`raycad.train.cv.finetune_cv`). ``data``
    (with its ``data_report``) = already prepared, materialized data: one fold of a cross-validation.
    ``plan``: `raycad.data.plan.plan_data` of ``cfg`` when the caller made it before starting Ray.
    """
    if cfg.train.cv_folds and data is None:
        from raycad.train.cv import finetune_cv

        return finetune_cv(cfg, show=show)
    from raycad.train.lora import LORA_ON_RANDOM_INIT, lora_on_random_init

    if lora_on_random_init(cfg):
        log.warning(LORA_ON_RANDOM_INIT)
    t0 = time.perf_counter()
    run = _prepare(cfg, plan) if data is None else _given(cfg, data, data_report)
    baseline, batch_rows = _before_fit(run)
    fitted = _fit(run, batch_rows)
    test_split, test_eval, test_time = _test(run, fitted)
    model_dir = _export(run, fitted.model, test_eval.metrics)
    results = _results(run, fitted, test_split, test_eval, model_dir, baseline,
                       {"total_s": time.perf_counter() - t0, "fit_s": fitted.seconds, "test_eval_s": test_time})
    _write(run, results, fitted.history, baseline, show=show, model_dir=model_dir)
    return FinetuneResult(run_dir=run.run_dir, test_metrics=test_eval.metrics, best_val_metrics=fitted.metrics,
                          history=fitted.history, best_checkpoint=fitted.checkpoint.path, model_dir=model_dir,
                          results=results)


def _prepare(cfg: FinetuneConfig, plan: Any) -> _Prepared:
    """Name the run, refuse a silently changed config, list + check the sources, start Ray, prepare the data."""
    from raycad.data import prepare_datasets
    from raycad.data.plan import plan_data
    from raycad.train.trainer import (
        cache_small_data,
        check_resumed_data,
        default_run_name,
        resolve_resume,
        start_run,
    )

    cfg = resolve_resume(cfg.with_overrides({"run.name": cfg.run.name or default_run_name(cfg)}))
    plan = plan or plan_data(cfg)
    cfg, name, run_dir = start_run(cfg, cfg.run.name, save_config=False)  # config.yaml: when training starts
    data = prepare_datasets(cfg, plan)
    report = data.report()
    data.check(report)  # a single class, a stray label, non-DNA: an error before training
    counts = {split: info["records"] for split, info in report["splits"].items()}
    cache_small_data(data, cfg, sum(counts.values()))
    check_resumed_data(run_dir, data.class_names, data.max_length)
    if not (run_dir / "config.yaml").is_file():  # a resumed run keeps its own
        cfg.save(run_dir / "config.yaml")
    return _Prepared(cfg, name, run_dir, data, report, counts)


def _given(cfg: FinetuneConfig, data: PreparedData, report: dict[str, Any] | None) -> _Prepared:
    """Data handed in, already materialized (a cross-validation fold)."""
    from raycad.train.trainer import default_run_name, start_run

    if report is None:
        raise ValueError("finetune(data=...) needs the data's report (data_report=...)")
    cfg, name, run_dir = start_run(cfg, default_run_name(cfg))
    counts = {split: info["records"] for split, info in report["splits"].items()}
    return _Prepared(cfg, name, run_dir, data, report, counts)


def _before_fit(run: _Prepared) -> tuple[dict[str, Any] | None, int | None]:
    """Audit the splits, fit the k-mer baseline on the same records, then bucket the training data by length;
    returns the baseline's results and the training batch rows."""
    from raycad.baseline import baseline_step
    from raycad.data.splits import audit_splits, collect_records
    from raycad.train.trainer import bucket_training_data

    data, cfg = run.data, run.cfg
    log.info("data: %s classes %s, max_length %d, %d training records", data.num_classes, data.class_names,
             data.max_length, run.counts["train"])
    records = collect_records(data, cfg.baseline.max_records)  # ids, sequence hashes, token ids
    run.report["audit"] = audit_splits(records, run.run_dir / "splits")  # record ids per split, duplicates
    baseline = baseline_step(cfg, data, records)  # None if baseline.enabled=false
    return baseline, bucket_training_data(data, cfg)  # after everything reading records


def _fit(run: _Prepared, batch_rows: int | None) -> _Fitted:
    """Fit the `TorchTrainer` and load the best checkpoint's model (by the early-stopping metric)."""
    from raycad.train.checkpoint import load_model_from_checkpoint
    from raycad.train.trainer import best_checkpoint, build_trainer

    t_fit = time.perf_counter()
    result = build_trainer(run.cfg, run.data, name=run.name, num_train=run.counts["train"],
                           train_batch_rows=batch_rows).fit()
    seconds = time.perf_counter() - t_fit
    if result.error:
        raise result.error
    checkpoint, metrics = best_checkpoint(result, run.cfg.train.early_stopping_metric,
                                          run.cfg.train.early_stopping_mode)
    returned = result.return_value or {}
    model, state = load_model_from_checkpoint(checkpoint, merge=False)
    return _Fitted(checkpoint, metrics, returned.get("history") or state["history"],
                   bool(returned.get("stopped_early", False)), result.path, seconds, model)


def _test(run: _Prepared, fitted: _Fitted) -> tuple[str, Any, float]:
    """The best checkpoint on the test split (the validation split when there is none)."""
    from raycad.train.trainer import evaluate_split

    test_split = "test" if "test" in run.data.datasets else "validation"
    if test_split != "test":
        log.warning("no test split: reporting the best checkpoint's metrics on the validation split")
    t_test = time.perf_counter()
    test_eval = evaluate_split(run.cfg, fitted.checkpoint, run.data, test_split)
    return test_split, test_eval, time.perf_counter() - t_test


def _export(run: _Prepared, model: Any, test_metrics: dict[str, Any]) -> Path | None:
    """The model (LoRA merged) as a Hugging Face-style directory whose raycad.json holds the padding rule."""
    from raycad.data.batching import PaddingRule
    from raycad.train.checkpoint import export_model

    cfg, data = run.cfg, run.data
    if not cfg.run.export_model:
        return None
    meta = {"class_names": list(data.class_names), "task": cfg.data.task,
            **PaddingRule.from_config(cfg.data, data.max_length).to_meta(),
            "truncation": cfg.data.truncation, "conjoin_eval": cfg.head.conjoin_eval,
            "test_metrics": {k: v for k, v in test_metrics.items() if not isinstance(v, list)},
            "config": cfg.to_dict()}
    return export_model(model, run.run_dir / "model", meta=meta)


def _results(run: _Prepared, fitted: _Fitted, test_split: str, test_eval: Any, model_dir: Path | None,
             baseline: dict[str, Any] | None, timings: dict[str, float]) -> dict[str, Any]:
    """The contents of results.json."""
    from raycad.train.lora import count_parameters
    from raycad.train.trainer import resolve_cpus_per_worker

    cfg, data, history, best = run.cfg, run.data, fitted.history, fitted.metrics
    num_train, num_val = run.counts["train"], run.counts.get("validation", 0)
    trainable, total = count_parameters(fitted.model)
    train_samples = sum(h.get("train_samples", 0) for h in history)
    train_time = sum(h.get("train_time_s", 0.0) for h in history)
    return {
        "run": run.name,
        "config": cfg.to_dict(),
        "data": run.report,
        # streaming_split(equal=True) gives every worker the same number of rows: up to num_workers - 1 rows of
        # train/validation are left out of each epoch / evaluation (length-bucketed training: the records of any
        # batch with fewer records than workers). Counted here, never silently.
        "rows_left_out_by_equal_split": {
            "train_per_epoch": num_train - int(history[-1].get("train_samples", num_train)) if history else 0,
            "validation": num_val - int(best.get("val_n", num_val)),
        },
        "class_names": list(data.class_names),
        "num_classes": data.num_classes,
        "max_length": data.max_length,
        "test_split": test_split,
        "test_metrics": test_eval.metrics,
        "test_eval": test_eval.info(),
        "best_epoch": best.get("epoch"),
        "best_validation_metrics": best,
        "epochs_run": len(history),
        "stopped_early": fitted.stopped_early,
        "history": history,
        "parameters": {"trainable": trainable, "total": total},
        "timings": {**timings, "train_s": train_time},
        "train_sequences_per_s": train_samples / train_time if train_time else None,
        "scaling": {"num_workers": cfg.scaling.num_workers, "use_gpu": cfg.scaling.use_gpu,
                    "cpus_per_worker": resolve_cpus_per_worker(cfg)},
        "best_checkpoint": fitted.checkpoint.path,
        "ray_run_path": fitted.ray_path,
        "model_dir": str(model_dir) if model_dir else None,
        "baseline": baseline,
    }


def _write(run: _Prepared, results: dict[str, Any], history: list[dict[str, Any]],
           baseline: dict[str, Any] | None, *, show: bool, model_dir: Path | None) -> None:
    """results.json, metrics.csv, the learning curve; published next to remote checkpoints; a table."""
    from raycad.storage import publish_run
    from raycad.train import report

    report.write_results(run.run_dir, results)
    report.write_metrics_csv(run.run_dir / "metrics.csv", history)
    report.plot_learning_curve(run.run_dir / "learning_curve.png", history,
                               metric=run.cfg.train.early_stopping_metric, baseline=baseline)
    publish_run(run.cfg, run.run_dir)  # remote run.storage_path (s3://): outputs go next to the checkpoints
    if show:
        console.print(report.results_table(results))
        console.print(f"results: {run.run_dir / 'results.json'}" + (f"   model: {model_dir}" if model_dir else ""))


# ---- evaluate --------------------------------------------------------------------------------------------------


class MissingSplit(ValueError):
    """The data to evaluate on has no such split."""


@dataclass
class Evaluated:
    """What `evaluate` measured: metrics (keys prefixed by the split), the split, its class names, seconds."""

    metrics: dict[str, Any]
    split: str
    class_names: list[str]
    seconds: float


def evaluation_config(model_dir: str | Path, data: dict[str, Any], *, config: str | Path | None = None,
                      overrides: list[str] | None = None) -> FinetuneConfig:
    """The config to score ``model_dir`` with: the one it was trained with (its state.json / raycad.json, or
    ``config``), its class names, max_length and truncation, the ``data.*`` fields in ``data``, then
    ``overrides``."""
    from raycad.infer import read_spec
    from raycad.train.checkpoint import EXPORT_META_NAME, STATE_NAME

    model_dir = Path(model_dir)
    spec = read_spec(model_dir)  # fails here, before Ray starts, on a bad directory
    meta_file = model_dir / (STATE_NAME if (model_dir / STATE_NAME).is_file() else EXPORT_META_NAME)
    base = (json.loads(meta_file.read_text()).get("config") if meta_file.is_file() else None) or {}
    cfg = FinetuneConfig.from_dict(base, source=str(meta_file)) if base else FinetuneConfig()
    if config:
        cfg = FinetuneConfig.from_file(config)
    fields = {"task": None, "train": None, "validation": None, "test": None, "limit": None, **data,
              "class_names": list(spec.class_names), "max_length": spec.max_length, "truncation": spec.truncation}
    cfg = cfg.with_overrides({f"data.{k}": v for k, v in fields.items()})
    return cfg.with_overrides(overrides) if overrides else cfg


def evaluate(model_dir: str | Path, data: str | None = None, *, split: str = "test",
             config: str | Path | None = None, overrides: list[str] | None = None) -> Evaluated:
    """Metrics of an exported model (or a training checkpoint) on ``data``: a task name/alias (its ``split``),
    a URI (scored whole, as the "test" split) or None (the bundled demo's ``split``)."""
    from raycad.data import prepare_datasets
    from raycad.data.plan import plan_data
    from raycad.data.tasks import resolve_task_or_uri
    from raycad.runtime import init_ray
    from raycad.train.trainer import evaluate_split

    fields = {k.removeprefix("data."): v for k, v in resolve_task_or_uri(data).items()}
    if "train" in fields:  # score the whole file: it serves as every split, only "test" is read
        fields.update(validation=data, test=data)
        split = "test"
    cfg = evaluation_config(model_dir, fields, config=config, overrides=overrides)
    plan = plan_data(cfg)  # before Ray starts
    init_ray()
    prepared = prepare_datasets(cfg, plan)
    if split not in prepared.datasets:
        raise MissingSplit(f"the data has no {split!r} split (has {sorted(prepared.datasets)})")
    start = time.perf_counter()
    metrics = evaluate_split(cfg, Path(model_dir), prepared, split).metrics
    return Evaluated(metrics, split, list(prepared.class_names), time.perf_counter() - start)
