"""Tuning benchmark: a small ``raycad tune`` sweep on this machine; results go to ``## Tuning`` in BENCHMARKS.md.

It runs one task (a class-balanced slice of the bundled demo, a small Caduceus) with N trials of E
epochs under ASHA, and reports the sweep's wall time, trials/hour, the time per trial split into training
and everything else (Ray Train start-up, validation, checkpoints), and what ASHA saved: epochs run against
epochs budgeted (every trial to the end), and the wall time that would have cost at the measured seconds
per epoch.

    python bench/tune.py --trials 6 --epochs 3 --per-class 256 --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTION = "## Tuning"
NOTE = ('What works on 2 cores with Ray 2.60 (Tune + Train V2): each trial is a function trainable holding `{"CPU": 0.01}` (a 0-CPU request is rejected by Tune); Train\'s controller takes 0 CPU and its workers their own placement group; Ray Data tasks run outside both and need a whole free CPU, so one trial runs at a time and each task\'s data is tokenized once and materialized before its trials. Tune does not free a finished or ASHA-stopped trial\'s worker placement group (Ray Train\'s cleaner needs the State API, i.e. a dashboard and a single Ray instance on the machine); without `raycad.tune.cleanup` the second trial waited forever for CPUs.')


def run(args: argparse.Namespace) -> dict[str, Any]:
    from raycad.runtime import init_ray
    from raycad.tune import SweepConfig, run_sweep

    init_ray(num_cpus=args.cpus)
    out = Path(args.output or tempfile.mkdtemp(prefix="raycad-bench-tune-"))
    cfg = SweepConfig.from_dict({
        "base": {"model": {"preset": "caduceus-ps-1k-d118-l4", "overrides": {"d_model": args.d_model,
                                                                            "n_layer": args.n_layer}},
                 "train": {"epochs": args.epochs}, "scaling": {"num_workers": args.workers},
                 "run": {"export_model": False}},
        "space": {"batch_size": [32, 64], "head_hidden": [32, 64]},
        "tasks": [{"name": "demo_slice", "data": balanced_slice(out / "data", args.per_class)}],
        "num_samples": args.trials, "seed": args.seed, "name": "bench",
        "output_dir": str(out), "asha": {"grace_period": 1, "reduction_factor": 2},
    })
    t0 = time.perf_counter()
    result = run_sweep(cfg, show=False)
    wall = time.perf_counter() - t0
    row = result.rows[0]
    train_s, epochs = _epoch_times(Path(cfg.output_dir) / "bench" / "ray" / "tune" / "demo_slice")
    per_epoch = train_s / epochs if epochs else float("nan")
    saved_epochs = row["epochs_budget"] - row["epochs_run"]
    return {
        "wall_s": wall, "tuning_s": row["wall_time_s"], "trials": row["trials"],
        "trials_per_hour": 3600 * row["trials"] / row["wall_time_s"],
        "stopped_early": row["trials_stopped_early"], "epochs_run": row["epochs_run"],
        "epochs_budget": row["epochs_budget"], "train_s_per_epoch": per_epoch,
        "overhead_s_per_trial": (row["wall_time_s"] - train_s) / row["trials"],
        "asha_saved_epochs": saved_epochs, "asha_saved_s_est": saved_epochs * per_epoch,
        "best_val_accuracy": row["val_accuracy"], "test_accuracy": row.get("test_accuracy"),
        "best_config": row["best_config"], "load": f"{os.getloadavg()[0]:.1f}",
    }


def balanced_slice(root: Path, per_class: int) -> dict[str, str]:
    """Class-balanced train/validation/test CSVs (per_class, per_class/4, per_class/4 rows per class) cut from
    the bundled demo's own splits."""
    import pandas as pd

    from raycad.data.loader import BUNDLED_DEMO

    root.mkdir(parents=True, exist_ok=True)
    demo = pd.read_parquet(BUNDLED_DEMO)
    paths = {}
    for split, n in (("train", per_class), ("validation", per_class // 4), ("test", per_class // 4)):
        part = demo[demo.split == split].groupby("label").head(n).sample(frac=1, random_state=0)
        paths[split] = str(root / f"{split}.csv")
        part[["id", "sequence", "label"]].to_csv(paths[split], index=False)
    return paths


def _epoch_times(experiment: Path) -> tuple[float, int]:
    """Sum of per-epoch wall times (``epoch_time_s``, train + validation) over every trial, and the epoch count."""
    total, count = 0.0, 0
    for progress in experiment.glob("*/result.json"):
        for line in progress.read_text().splitlines():
            if line.strip():
                result = json.loads(line)
                total += float(result.get("epoch_time_s", 0.0))
                count += 1
    return total, count


def fragment(r: dict[str, Any], args: argparse.Namespace) -> str:
    budget_h = r["epochs_budget"] * r["train_s_per_epoch"] + r["trials"] * r["overhead_s_per_trial"]
    return "\n".join([
        (f"One task (a class-balanced slice of the bundled demo: {2 * args.per_class} / {args.per_class // 2} / "
        f"{args.per_class // 2} train/val/test sequences of 251 bp), {args.trials} trials x {args.epochs} "
        f"epochs, Caduceus-PS d_model {args.d_model} x {args.n_layer} layers, {args.workers} Ray Train "
        f"worker(s) per trial, one trial at a time (2 cores: a trial's workers take 1 CPU, one stays free for "
        f"Ray Data), Optuna TPE (seed {args.seed}) + ASHA (grace 1 epoch, reduction 2) on val_accuracy."),
        "",
        "| measure | value |",
        "|---|---:|",
        f"| sweep wall time (data prep + trials + test eval) | {r['tuning_s']:.0f} s |",
        f"| trials/hour | {r['trials_per_hour']:.0f} |",
        f"| epoch time (train + validation), mean | {r['train_s_per_epoch']:.1f} s |",
        (f"| per-trial overhead outside epochs (Ray Train start, checkpoints, Tune) | "
        f"{r['overhead_s_per_trial']:.1f} s |"),
        f"| trials stopped early by ASHA | {r['stopped_early']} of {r['trials']} |",
        f"| epochs run / budgeted (every trial to the end) | {r['epochs_run']} / {r['epochs_budget']} |",
        (f"| ASHA saved | {r['asha_saved_epochs']} epochs = "
        f"{100 * r['asha_saved_epochs'] / r['epochs_budget']:.0f}% of epochs, ~{r['asha_saved_s_est']:.0f} s "
        f"of {budget_h:.0f} s estimated without it |"),
        (f"| best trial | {r['best_config']}: val acc {r['best_val_accuracy']:.3f}, test acc "
        f"{(r['test_accuracy'] or float('nan')):.3f} |"),
        "",
        (f"Load average at the end: {r['load']} (the machine is shared; times are upper bounds). Accuracies are "
        "on a small slice of the bundled demo (not comparable to published results)."),
        "",
        NOTE,
    ])


def write_section(body: str, command: str) -> None:
    """Replace (or append) the ``## Tuning`` section of BENCHMARKS.md."""
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})"
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = f"{SECTION}\n\n_Machine: {machine}; command: `{command}`; date: {stamp}._\n\n{body}\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section
    BENCHMARKS_MD.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=256, help="training sequences per class")
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="sweep output directory (default: a temporary one)")
    parser.add_argument("--write", action="store_true", help="update the ## Tuning section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    body = fragment(result, args)
    print(body)
    if args.write:
        write_section(body, "python bench/tune.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
