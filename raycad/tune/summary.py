"""Sweep reports: ``summary.csv``, ``summary.md``, a bar chart, and a rich table for the terminal.

Each row is one task (see `raycad.tune.sweep._task_row`): the best configuration, its validation and test
accuracy / F1 / MCC / AUROC, the k-mer baseline's on the same records, trials run and stopped early, epochs run
against the budget, wall time, and the published Table 1 accuracies of Schiff et al. 2024 beside raycad's for
benchmark tasks.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from raycad.data.tasks import PROTOCOL, REPORT_MODELS, SOURCE

CSV_COLUMNS = (
    "task", "benchmark", "best_config", "best_trial", "best_epoch",
    "val_accuracy", "val_f1", "val_mcc", "val_auroc",
    "test_split", "test_accuracy", "test_f1", "test_mcc", "test_auroc",
    "trials", "trials_completed", "trials_stopped_early", "trials_errored", "trial_starts",
    "epochs_run", "epochs_budget", "wall_time_s", "best_config_file",
    "baseline_config", "baseline_val_accuracy", "baseline_test_accuracy", "baseline_test_f1", "baseline_test_mcc",
    "baseline_test_auroc", "cv_folds", "val_accuracy_spread", "test_accuracy_spread", "test_f1_spread",
    "test_mcc_spread", "test_auroc_spread",
)
BASELINE = "k-mer LR"
"""Column / series name of the k-mer logistic-regression baseline (`raycad.baseline`)."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_summary(out: Path, rows: list[dict[str, Any]], metric: str = "val_accuracy") -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "summary.csv", "markdown": out / "summary.md", "plot": out / "summary.png"}
    write_csv(paths["csv"], rows)
    paths["markdown"].write_text(markdown(rows, metric))
    plot(paths["plot"], rows)
    return paths


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(CSV_COLUMNS) + [f"published_{m}" for m in REPORT_MODELS]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = {k: row.get(k) for k in CSV_COLUMNS}
            flat.update({f"published_{m}": (row.get("published") or {}).get(m) for m in REPORT_MODELS})
            writer.writerow(flat)


def markdown(rows: list[dict[str, Any]], metric: str = "val_accuracy") -> str:
    """The summary as Markdown: results, published accuracies beside raycad's, and the search effort."""
    lines = ["# raycad tuning sweep", "",
             f"Best trial per task by `{metric}` (best epoch); test metrics are that checkpoint on the test split.",
             "", "## Results", "",
             ("| task | best config | val acc | val F1 | val MCC | val AUROC | test acc | test F1 | test MCC "
             "| test AUROC |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r.get('best_config', '')} | " + " | ".join(
            _fmt(r.get(k)) for k in ("val_accuracy", "val_f1", "val_mcc", "val_auroc", "test_accuracy",
                                     "test_f1", "test_mcc", "test_auroc")) + " |")
    if any(r.get("baseline_config") for r in rows):
        lines += ["", "## Against the k-mer baseline", "",
                  ("Logistic regression on k-mer counts (k and C chosen on validation), fitted on the same "
                   "train / validation / test records and scored by the same metric code."), "",
                  "| task | | accuracy | F1 | MCC | AUROC |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['task']} | raycad | " + " | ".join(
                _with_spread(r, f"test_{k}") for k in ("accuracy", "f1", "mcc", "auroc")) + " |")
            if r.get("baseline_config"):
                lines.append(f"| | {r['baseline_config']} | " + " | ".join(
                    _fmt(r.get(f"baseline_test_{k}")) for k in ("accuracy", "f1", "mcc", "auroc")) + " |")
    lines += ["", "## Against published accuracies", "",
              f"| task | raycad (test) | {BASELINE} (test) | " + " | ".join(REPORT_MODELS) + " |",
              "|---|---|---|" + "---|" * len(REPORT_MODELS)]
    for r in rows:
        pub = r.get("published") or {}
        lines.append(f"| {r['task']} | {_with_spread(r, 'test_accuracy')} | {_fmt(r.get('baseline_test_accuracy'))} | "
                     + " | ".join(_fmt(pub.get(m)) for m in REPORT_MODELS) + " |")
    protocols = sorted({r["protocol"] for r in rows if r.get("protocol")})
    lines += [""] + [f"raycad: {p}." for p in protocols] + [
        "" if protocols else "raycad: one run per trial, the best trial's best checkpoint on the test split.", "",
        (f"Published: {SOURCE} ({PROTOCOL}). Only benchmark tasks run on their own train/test split are "
         "comparable; the bundled demo data and users' datasets have no published row."), "",
              "## Search effort", "",
              ("| task | trials | ran to the end | stopped early | errored | trial starts | epochs (CV: folds) run "
               "/ budget | ASHA saved | wall time (s) |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = r.get("epochs_budget") or 0
        saved = f"{100 * (1 - r['epochs_run'] / budget):.0f}%" if budget else "–"
        lines.append(f"| {r['task']} | {r['trials']} | {r['trials_completed']} | {r['trials_stopped_early']} | "
                     f"{r['trials_errored']} | {r.get('trial_starts', '–')} | {r['epochs_run']} / {budget} | "
                     f"{saved} | {_fmt(r.get('wall_time_s'), 1)} |")
    lines += ["", "## Best configurations", ""]
    for r in rows:
        where = f"{r['cv_folds']}-fold CV" if r.get("cv_folds") else f"epoch {r.get('best_epoch')}"
        lines.append(f"- **{r['task']}**: `{r.get('best_config_file')}` (trial {r.get('best_trial')}, "
                     f"{where}): `{r.get('best_params')}`")
    return "\n".join(lines) + "\n"


def _with_spread(row: dict[str, Any], key: str) -> str:
    """``0.851 ± 0.012`` for a cross-validated row (mean ± max - min over folds), else the plain value."""
    spread = row.get(f"{key}_spread")
    return _fmt(row.get(key)) + (f" ± {spread:.3f}" if spread is not None and row.get(key) is not None else "")


def plot(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Grouped bars per task: raycad's test (or validation) accuracy beside the published models'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = ["raycad", BASELINE] + list(REPORT_MODELS)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.2))
    for i, name in enumerate(series):
        values = []
        for r in rows:
            if name == "raycad":
                v = r.get("test_accuracy") if r.get("test_accuracy") is not None else r.get("val_accuracy")
            elif name == BASELINE:
                v = r.get("baseline_test_accuracy")
            else:
                v = (r.get("published") or {}).get(name)
            values.append(float("nan") if v is None else float(v))
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["task"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title("raycad tuned vs published (Schiff et al. 2024, Table 1)")
    ax.legend(fontsize=7, ncol=len(series), loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of the sweep's results for the terminal."""
    table = Table(title="raycad tune: best trial per task")
    for col in ("task", "best config", "val acc", "test acc", "test F1", "test MCC", "test AUROC",
                f"{BASELINE} acc", "trials (stopped early)", "epochs run/budget", "wall s", *REPORT_MODELS):
        table.add_column(col, justify="left" if col in ("task", "best config") else "right")
    for r in rows:
        pub = r.get("published") or {}
        table.add_row(r["task"], r.get("best_config", ""), _fmt(r.get("val_accuracy")), _fmt(r.get("test_accuracy")),
                      _fmt(r.get("test_f1")), _fmt(r.get("test_mcc")), _fmt(r.get("test_auroc")),
                      _fmt(r.get("baseline_test_accuracy")), f"{r['trials']} ({r['trials_stopped_early']})", f"{r['epochs_run']}/{r['epochs_budget']}",
                      _fmt(r.get("wall_time_s"), 0), *(_fmt(pub.get(m)) for m in REPORT_MODELS))
    return table
