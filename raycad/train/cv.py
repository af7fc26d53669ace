"""k-fold cross-validation of the training split: the Caduceus paper's Genomic Benchmarks protocol.

``raycad finetune --cv K`` (``train.cv_folds=K``): the training split is cut into K stratified, seeded folds
(`raycad.data.splits.fold_of`: per class, ordered by a seeded hash of the sequence; identical sequences
share a fold). Fold i's run trains on the other K - 1 folds, early-stops and picks its checkpoint on fold i,
and is scored on the test split, by exactly `raycad.train.recipe.finetune` (the k-mer baseline beside it,
on the same fold records). The folds run as Ray Train runs one after another, each in
``<run>/fold_<i>/`` with its own results.json, learning curve, ``splits/`` (the fold's record ids) and
checkpoints; a finished fold is kept when the run is started again under the same name. ``<run>/results.json``
holds every fold and, per metric, the mean, min, max and spread (max - min), as Schiff et al. 2024 report it.
The configured validation split is not used: each fold's held-out part validates.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raycad.config import FinetuneConfig
from raycad.runtime import console, get_logger

if TYPE_CHECKING:
    from rich.table import Table

    from raycad.data import PreparedData
    from raycad.train.recipe import FinetuneResult

log = get_logger("raycad.train.cv")

METRICS = ("accuracy", "f1", "mcc", "auroc")


def protocol(k: int, seed: int) -> str:
    return (f"{k}-fold cross-validation of the training split (stratified, seed {seed}): each fold's model trains "
            f"on the other {k - 1}, is early-stopped on the held-out fold and scored on the test split; "
            "mean and spread = max - min over folds (the protocol of Schiff et al. 2024)")


def add_fold(batch: pa.Table, *, sorted_keys: np.ndarray, folds: np.ndarray) -> pa.Table:
    """Append each record's ``fold`` (looked up by its sequence ``key``)."""
    pos = np.searchsorted(sorted_keys, batch.column("key").to_numpy())
    return batch.append_column("fold", pa.array(folds[pos], pa.int64()))


def fold_datasets(data: PreparedData, k: int, seed: int) -> tuple[list[PreparedData], np.ndarray]:
    """K copies of ``data`` whose train / validation are the other folds / fold i (test unchanged), and the
    fold sizes per class ``[k, classes]``."""
    from ray.data.expressions import col

    from raycad.data.splits import collect_split, fold_of

    train = collect_split(data.datasets["train"], input_ids_limit=0)
    if train.keys is None or not len(train):
        raise ValueError("cross-validation needs a non-empty training split with sequence keys")
    folds = fold_of(train.labels, train.keys, k, seed)
    order = np.argsort(train.keys, kind="stable")
    sorted_keys, sorted_folds = train.keys[order], folds[order]
    sizes = np.zeros((k, data.num_classes), dtype=np.int64)
    np.add.at(sizes, (folds, train.labels), 1)
    if (sizes.sum(axis=1) == 0).any():
        raise ValueError(f"{len(train)} training records are too few for {k} folds")
    marked = data.datasets["train"].map_batches(add_fold, batch_format="pyarrow",
                                                fn_kwargs={"sorted_keys": sorted_keys, "folds": sorted_folds})
    marked = marked.materialize()
    out = []
    for i in range(k):
        datasets = {"train": marked.filter(expr=col("fold") != i).drop_columns(["fold"]).materialize(),
                    "validation": marked.filter(expr=col("fold") == i).drop_columns(["fold"]).materialize()}
        if "test" in data.datasets:
            datasets["test"] = data.datasets["test"]
        out.append(dataclasses.replace(data, datasets=datasets, tokenized={}, skips={}))
    return out, sizes


def aggregate(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    """Per key: mean, min, max and spread (max - min) over the rows that have it."""
    out = {}
    for key in keys:
        values = [float(r[key]) for r in rows if r.get(key) is not None and np.isfinite(r[key])]
        if values:
            out[key] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
                        "spread": max(values) - min(values), "n": len(values)}
    return out


def _fold_row(i: int, results: dict[str, Any]) -> dict[str, Any]:
    test, best = results["test_metrics"], results.get("best_validation_metrics", {})
    prefix = "test_" if results.get("test_split") == "test" else "val_"
    row: dict[str, Any] = {"fold": i, "run_dir": results.get("run_dir"), "best_epoch": results.get("best_epoch"),
                           "records": {s: v["records"] for s, v in results["data"]["splits"].items()},
                           **{f"test_{m}": test.get(f"{prefix}{m}") for m in METRICS},
                           **{f"val_{m}": best.get(f"val_{m}") for m in METRICS}}
    baseline = results.get("baseline")
    if baseline:
        row.update({"baseline_k": baseline["k"], "baseline_C": baseline["C"],
                    **{f"baseline_test_{m}": baseline.get(f"{prefix}{m}") for m in METRICS},
                    **{f"baseline_val_{m}": baseline.get(f"val_{m}") for m in METRICS}})
    return row


def _run_fold(cfg: FinetuneConfig, i: int, fold_data: PreparedData, sizes: np.ndarray,
              data_report: dict[str, Any], run_dir: Any) -> dict[str, Any]:
    """Fold ``i`` (1-based) trained by `finetune` in ``<run>/fold_<i>``, or kept when it finished before an
    interruption; returns its summary row."""
    from raycad.train.recipe import finetune

    k = len(sizes)
    fold_dir = run_dir / f"fold_{i}"
    saved = fold_dir / "results.json"
    if saved.is_file():  # finished before an interruption: keep it
        log.info("fold %d/%d already finished: keeping %s", i, k, saved)
        fold_results = json.loads(saved.read_text())
    else:
        log.info("fold %d/%d: training on %d records, validating on fold %d (%d records)", i, k,
                 int(sizes.sum() - sizes[i - 1].sum()), i, int(sizes[i - 1].sum()))
        fold_cfg = cfg.with_overrides({"run.name": f"fold_{i}", "run.output_dir": str(run_dir),
                                       "train.cv_folds": 0, "run.export_model": False})
        fold_report = {**data_report, "note": f"fold {i} of {k}: {data_report.get('note', '')}".strip(),
                       "splits": {"train": {"records": int(sizes.sum() - sizes[i - 1].sum())},
                                  "validation": {"records": int(sizes[i - 1].sum())},
                                  **({"test": data_report["splits"]["test"]}
                                     if "test" in data_report["splits"] else {})}}
        fold_results = finetune(fold_cfg, show=False, data=fold_data, data_report=fold_report).results
    row = {**_fold_row(i, fold_results), "run_dir": str(fold_dir)}
    log.info("fold %d/%d: test accuracy %.4f%s", i, k, row["test_accuracy"] or float("nan"),
             f" (baseline {row['baseline_test_accuracy']:.4f})" if row.get("baseline_test_accuracy") is not None
             else "")
    return row


def finetune_cv(cfg: FinetuneConfig, *, show: bool = True) -> FinetuneResult:
    """Run the K folds of ``cfg.train.cv_folds`` (see the module doc); returns the summary as a result."""
    from raycad.data import prepare_datasets
    from raycad.train import report
    from raycad.train.recipe import FinetuneResult
    from raycad.train.trainer import cache_small_data, default_run_name, start_run

    k, seed = cfg.train.cv_folds, cfg.train.seed
    t0 = time.perf_counter()
    cfg, name, run_dir = start_run(cfg, default_run_name(cfg))
    data = prepare_datasets(cfg)
    data_report = data.report()
    data.check(data_report)  # a single class, a stray label, non-DNA: an error before any fold trains
    cache_small_data(data, cfg, sum(split["records"] for split in data_report["splits"].values()))
    folds, sizes = fold_datasets(data, k, seed)
    log.info("%d folds of the training split, records per fold and class: %s", k, sizes.tolist())

    rows = [_run_fold(cfg, i, fold_data, sizes, data_report, run_dir) for i, fold_data in enumerate(folds, start=1)]
    keys = [f"{s}_{m}" for s in ("test", "val") for m in METRICS]
    results: dict[str, Any] = {
        "run": name,
        "protocol": protocol(k, seed),
        "cv_folds": k,
        "config": cfg.to_dict(),
        "data": {**data_report, "fold_sizes_per_class": sizes.tolist()},
        "class_names": list(data.class_names),
        "test_split": "test" if "test" in data.datasets else "validation",
        "folds": rows,
        "aggregate": aggregate(rows, keys),
        "baseline_aggregate": aggregate(rows, [f"baseline_{key}" for key in keys]) if cfg.baseline.enabled else None,
        "timings": {"total_s": time.perf_counter() - t0},
    }
    results["test_metrics"] = {key: v["mean"] for key, v in results["aggregate"].items() if key.startswith("test_")}
    report.write_results(run_dir, results)
    if show:
        console.print(cv_table(results))
        console.print(f"results: {run_dir / 'results.json'}   folds: {run_dir}/fold_*/")
    return FinetuneResult(run_dir=run_dir, test_metrics=results["test_metrics"], best_val_metrics={},
                          history=[], best_checkpoint=None, model_dir=None, results=results)


def mean_spread(stats: dict[str, Any] | None) -> str:
    """``0.8512 ± 0.0123`` (mean ± max - min), or "-"."""
    if not stats:
        return "-"
    return f"{stats['mean']:.4f} ± {stats['spread']:.4f}"


def cv_table(results: dict[str, Any]) -> Table:
    """Model (and baseline) per metric as mean ± (max - min) over the folds, then each fold's test accuracy."""
    from rich.table import Table

    agg, base = results["aggregate"], results.get("baseline_aggregate") or {}
    split = results.get("test_split", "test")
    table = Table(title=f"raycad finetune --cv {results['cv_folds']}: {results['run']}",
                  caption="mean ± spread (max - min) over folds")
    table.add_column("")
    table.add_column(f"model ({split})", justify="right")
    if base:
        table.add_column(f"k-mer LR ({split})", justify="right")
    for m in METRICS:
        table.add_row(m, mean_spread(agg.get(f"test_{m}")), *([mean_spread(base.get(f"baseline_test_{m}"))]
                                                             if base else []))
    table.add_section()
    for row in results["folds"]:
        table.add_row(f"fold {row['fold']} accuracy", f"{row['test_accuracy']:.4f}",
                      *([f"{row['baseline_test_accuracy']:.4f}"] if base else []))
    return table
