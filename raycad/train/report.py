"""Run outputs: results.json, metrics.csv (one row per epoch), the learning-curve PNG and rich tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

CSV_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_accuracy", "val_f1", "val_mcc", "val_auroc",
               "val_n", "train_samples", "train_time_s", "train_sequences_per_s", "epoch_time_s")
HEADLINE = ("accuracy", "f1", "mcc", "auroc", "loss", "n")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, tuples lists, paths strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    path = Path(run_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=2, default=str) + "\n")
    return path


def write_metrics_csv(path: str | Path, history: list[dict[str, Any]],
                      columns: tuple[str, ...] = CSV_COLUMNS) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in columns})
    return path


def plot_learning_curve(path: str | Path, history: list[dict[str, Any]], metric: str = "val_accuracy",
                        baseline: dict[str, Any] | None = None) -> Path:
    """Train/validation loss and the validation metrics per epoch, as a PNG (matplotlib Agg backend).

    With a ``baseline`` result (`raycad.baseline`), its validation value of ``metric`` is a horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_loss.legend()
    for key in ("val_accuracy", "val_f1", "val_mcc", "val_auroc"):
        ax_metric.plot(epochs, [h.get(key, float("nan")) for h in history], "o-", label=key.removeprefix("val_"),
                       linewidth=2.5 if key == metric else 1.2)
    if baseline and baseline.get(metric) is not None:
        from raycad.baseline import describe

        ax_metric.axhline(baseline[metric], color="black", linestyle="--", linewidth=1.2,
                          label=f"{describe(baseline)}: {metric.removeprefix('val_')}")
    ax_metric.set(xlabel="epoch", ylabel="validation metric", title="validation")
    ax_metric.legend()
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_table(metrics: dict[str, Any], title: str = "metrics", class_names: list[str] | None = None) -> Table:
    """A rich table of one split's metrics (keys with any ``<split>_`` prefix) and its per-class counts."""
    prefix = next((p for p in ("test_", "val_") if any(k.startswith(p) for k in metrics)), "")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in HEADLINE:
        if f"{prefix}{key}" in metrics:
            table.add_row(key, fmt(metrics[f"{prefix}{key}"]))
    support = metrics.get(f"{prefix}support")
    if support:
        names = class_names or [str(i) for i in range(len(support))]
        tp, pred = metrics.get(f"{prefix}true_positives"), metrics.get(f"{prefix}predicted")
        for i, name in enumerate(names):
            table.add_row(f"class {name}", f"{tp[i]}/{support[i]} correct, {pred[i]} predicted")
    return table


def results_table(results: dict[str, Any]) -> Table:
    """The end-of-run summary: test metrics, best validation epoch, sizes and timings."""
    test = results["test_metrics"]
    prefix = "test_" if results.get("test_split") == "test" else "val_"
    baseline = results.get("baseline")
    table = Table(title=f"raycad finetune: {results['run']}")
    table.add_column("")
    table.add_column(f"model ({results.get('test_split', 'test')})", justify="right")
    if baseline:
        from raycad.baseline import describe

        table.add_column(f"{describe(baseline)}", justify="right")
    for key in HEADLINE:
        table.add_row(key, fmt(test.get(f"{prefix}{key}")),
                      *([fmt(baseline.get(f"{prefix}{key}"))] if baseline else []))
    best = results.get("best_validation_metrics", {})
    table.add_section()
    table.add_row("best epoch", f"{results.get('best_epoch')} of {results.get('epochs_run')}"
                  + (" (early stop)" if results.get("stopped_early") else ""))
    table.add_row("best val accuracy", fmt(best.get("val_accuracy")),
                  *([fmt(baseline.get("val_accuracy"))] if baseline else []))
    params = results.get("parameters", {})
    table.add_row("trainable / total params", f"{params.get('trainable', 0):,} / {params.get('total', 0):,}",
                  *([f"{baseline['features']:,} features"] if baseline else []))
    table.add_row("train sequences/s", fmt(results.get("train_sequences_per_s")))
    table.add_row("wall time", f"{results['timings']['total_s']:.0f} s",
                  *([f"{baseline['fit_time_s']:.0f} s"] if baseline else []))
    splits = (results.get("data") or {}).get("splits") or {}
    if splits:
        table.add_section()
        for label, key in (("records", "records"), ("skipped", "skipped"), ("truncated", "truncated"),
                           ("with [UNK]", "records_with_invalid"), ("RNA (U read as T)", "rna_records")):
            values = {name: sum(entry[key].values()) if isinstance(entry.get(key), dict) else int(entry.get(key) or 0)
                      for name, entry in splits.items()}
            if key != "records" and not any(values.values()):
                continue
            shown = " / ".join(f"{values[name]:,}" for name in splits)
            warn = key != "records" and key != "rna_records"
            table.add_row(f"{label} ({'/'.join(_SHORT.get(n, n) for n in splits)})",
                          f"[yellow]{shown}[/]" if warn else shown)
    return table


_SHORT = {"train": "train", "validation": "val", "test": "test"}
