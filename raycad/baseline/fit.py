"""Logistic regression on k-mer counts, fitted and scored on the records a fine-tuning run uses.

`baseline_step(cfg, data)` is what ``raycad finetune`` and every task of ``raycad tune`` run beside the model
(unless ``baseline.enabled=false``): it pulls the tokenized train / validation / test rows of the prepared
data (`raycad.data.splits.collect_records`: the same records, after the same truncation, as the model sees),
and
`fit_kmer_baseline` fits scikit-learn's `LogisticRegression` on L2-normalised k-mer counts
(`raycad.baseline.kmer`) for every (k, C) of ``cfg.baseline``, keeps the pair with the best validation
accuracy, and scores it on validation and test with the model's own metric code
(`raycad.train.metrics.EvalAccumulator`: accuracy, macro F1, MCC, AUROC). `run_baseline(cfg)` prepares the
data first (``raycad baseline``).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from raycad.baseline.kmer import kmer_counts, num_features
from raycad.config import BaselineSection, FinetuneConfig
from raycad.data.splits import SplitRecords, collect_records
from raycad.runtime import get_logger

if TYPE_CHECKING:
    from raycad.data import PreparedData

log = get_logger("raycad.baseline")

PREFIX = {"validation": "val_", "test": "test_"}
NAME = "k-mer logistic regression"


def _metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int, prefix: str) -> dict[str, Any]:
    import torch

    from raycad.train.metrics import EvalAccumulator

    acc = EvalAccumulator(num_classes)
    logits = torch.from_numpy(np.log(np.clip(probs, 1e-12, 1.0)))
    target = torch.from_numpy(labels)
    acc.update(logits, target, torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    return acc.compute(prefix=prefix)


def fit_kmer_baseline(records: dict[str, SplitRecords], num_classes: int, cfg: BaselineSection,
                      seed: int = 0) -> dict[str, Any]:
    """Fit on ``records["train"]``, choose (k, C) on ``records["validation"]``, score validation and test.

    Returns the chosen ``k``/``C``, every candidate's validation accuracy, ``val_*`` and (with a test split)
    ``test_*`` metrics, the number of k-mer windows skipped for N / [UNK] per split, and the fit time.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    start = time.perf_counter()
    for split in ("train", "validation"):
        if split not in records or not len(records[split].input_ids):
            raise ValueError(f"the k-mer baseline needs {split} records")
    # token ids may cover only the first records of a split (a limit): labels follow them
    labels = {split: rec.labels[:len(rec.input_ids)] for split, rec in records.items()}
    present = sorted(set(np.unique(labels["train"]).tolist()))
    if len(present) < 2:
        raise ValueError(f"the k-mer baseline needs at least 2 classes in train, found {present}")
    best: tuple[float, int, float, Any, dict[str, Any]] | None = None
    candidates, skipped_windows = [], {}
    for k in cfg.k:
        features = {}
        for split, rec in records.items():
            counts, skipped = kmer_counts(rec.input_ids, k, canonical=cfg.canonical)
            features[split] = normalize(counts)
            skipped_windows.setdefault(k, {})[split] = skipped
        for c in cfg.C:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(features["train"], labels["train"])
            val_acc = float(model.score(features["validation"], labels["validation"]))
            candidates.append({"k": k, "C": c, "val_accuracy": val_acc})
            if best is None or val_acc > best[0]:
                best = (val_acc, k, c, model, features)
    assert best is not None
    _, k, c, model, features = best
    out: dict[str, Any] = {"name": NAME, "k": k, "C": c, "canonical": cfg.canonical,
                           "features": num_features(k, cfg.canonical), "candidates": candidates,
                           "records": {s: len(y) for s, y in labels.items()},
                           "records_left_out": {s: len(r) - len(labels[s]) for s, r in records.items()
                                                if len(r) > len(labels[s])},
                           "skipped_windows_n": skipped_windows[k]}
    for split in ("validation", "test"):
        if split in records and len(labels[split]):
            probs = np.zeros((len(labels[split]), num_classes))
            probs[:, model.classes_] = model.predict_proba(features[split])
            out.update(_metrics(probs, labels[split], num_classes, PREFIX[split]))
    out["fit_time_s"] = time.perf_counter() - start
    return out


def describe(result: dict[str, Any]) -> str:
    """E.g. ``6-mer LR (C=1)`` or ``5-mer canonical LR (C=10)``."""
    return f"{result['k']}-mer{' canonical' if result.get('canonical') else ''} LR (C={result['C']:g})"


def baseline_step(cfg: FinetuneConfig, data: PreparedData,
                  records: dict[str, SplitRecords] | None = None) -> dict[str, Any] | None:
    """The baseline of a run on ``data`` (its train / validation / test datasets), or on its already
    collected ``records`` (`raycad.data.splits.collect_records`); None when disabled."""
    if not cfg.baseline.enabled:
        return None
    if records is None:
        records = collect_records(data, cfg.baseline.max_records)
    result = fit_kmer_baseline(records, data.num_classes, cfg.baseline, seed=cfg.train.seed)
    score = result.get("test_accuracy", result["val_accuracy"])
    log.info("baseline: %s, %s accuracy %.4f (%.1f s)", describe(result),
             "test" if "test_accuracy" in result else "validation", score, result["fit_time_s"])
    for split, left_out in result["records_left_out"].items():
        log.warning("baseline: used the first %d %s records of %d (baseline.max_records)",
                    result["records"][split], split, result["records"][split] + left_out)
    return result


def run_baseline(cfg: FinetuneConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prepare ``cfg``'s data as ``raycad finetune`` would and fit the baseline (``raycad baseline``).

    Returns (the baseline result, the data report of `PreparedData.report`)."""
    from raycad.data import prepare_datasets
    from raycad.runtime import init_ray
    from raycad.train.trainer import cache_small_data

    init_ray()
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    data = prepare_datasets(cfg)
    report = data.report()
    cache_small_data(data, cfg, sum(split["records"] for split in report["splits"].values()))
    result = baseline_step(cfg.with_overrides({"baseline.enabled": True}), data)
    assert result is not None
    return result, report
