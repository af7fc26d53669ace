"""End-to-end sweeps on a local 2-CPU Ray: 2 tasks x 3 trials with ASHA, the exported best config trained by
``raycad finetune``, and a sweep whose driver is killed mid-way resumed with ``raycad tune --resume``.

Tiny real data (bundled demo rows, 64 bp, written as user CSVs) and a one-layer d_model-16 Caduceus keep each
trial to a few seconds of training; Ray's per-trial start-up dominates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

TINY_BASE = {
    "model": {"preset": "caduceus-ps-1k-d118-l4", "overrides": {"d_model": 16, "n_layer": 1}},
    "data": {"max_length": 64},
    "train": {"epochs": 3, "eval_batch_size": 64},
    "scaling": {"num_workers": 1},
    "run": {"export_model": False, "checkpoints_to_keep": 1},
}
# Seeded TPE with a wide learning-rate range and a continuous metric: the proposals differ enough that ASHA
# (one rung per epoch, keep the top third) stops some of them.
TINY_SPACE = {"lr": {"low": 1e-5, "high": 3e-2, "log": True}, "batch_size": [16], "head_hidden": [16],
              "method": ["full"], "d_model": [16], "n_layer": [1]}


def _write_task(demo: pd.DataFrame, root: Path, name: str, offset: int, vary: bool = False) -> dict[str, str]:
    paths = {}
    for split, n in (("train", 32), ("validation", 16), ("test", 16)):
        part = demo[demo.split == split].groupby("label").nth(range(offset, offset + n)).sample(
            frac=1, random_state=0)
        if vary and split == "train":  # 20-251 bp: the trials train on length-bucketed batches
            part["sequence"] = [s[:k] for s, k in zip(part.sequence, [20, 36, 52, 251] * len(part))]
        path = root / f"{name}_{split}.csv"
        part[["id", "sequence", "label"]].to_csv(path, index=False)
        paths[split] = str(path)
    return paths


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory) -> list[dict]:
    """Two small user datasets (64/32/32 records) cut from different rows of the bundled demo; the second one's
    training records have different lengths."""
    from raycad.data.loader import BUNDLED_DEMO

    root = tmp_path_factory.mktemp("tune_data")
    demo = pd.read_parquet(BUNDLED_DEMO)
    return [{"name": "promoters_a", "data": _write_task(demo, root, "a", 0)},
            {"name": "promoters_b", "data": _write_task(demo, root, "b", 100, vary=True)}]


def _sweep_yaml(path: Path, tasks: list[dict], **fields) -> Path:
    cfg = {"base": TINY_BASE, "space": TINY_SPACE, "tasks": tasks, "num_samples": 3, "seed": 0,
           "metric": "val_loss", "mode": "min", "asha": {"grace_period": 1, "reduction_factor": 3}, **fields}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_task_sweep_asha_summary_and_best_config(ray_local, tiny_tasks, tmp_path):
    from raycad.config import FinetuneConfig
    from raycad.tune import SweepConfig, run_sweep

    cfg = SweepConfig.from_file(_sweep_yaml(tmp_path / "sweep.yaml", tiny_tasks, name="two",
                                            output_dir=str(tmp_path / "out")))
    result = run_sweep(cfg)

    assert [r["task"] for r in result.rows] == ["promoters_a", "promoters_b"]
    for row in result.rows:
        assert row["trials"] == 3 and row["trials_errored"] == 0 and row["trial_starts"] == 3
        assert row["epochs_budget"] == 9 and 3 <= row["epochs_run"] <= 9
        assert 0.0 <= row["val_accuracy"] <= 1.0 and 0.0 <= row["test_accuracy"] <= 1.0
        assert row["test_split"] == "test" and row["published"] == {}
        assert row["baseline"]["records"] == {"train": 64, "validation": 32, "test": 32}  # the task's records
        assert 0.0 <= row["baseline_test_accuracy"] <= 1.0 and row["baseline_config"].endswith(")")
    assert sum(r["trials_stopped_early"] for r in result.rows) >= 1, "ASHA stopped no trial"
    summary = pd.read_csv(result.paths["csv"])
    assert list(summary["task"]) == ["promoters_a", "promoters_b"]
    assert "| promoters_b |" in result.paths["markdown"].read_text()
    assert result.paths["plot"].stat().st_size > 5000

    # The exported best config is a plain fine-tuning config that `raycad finetune --config` trains.
    best = result.row("promoters_a")
    best_cfg = FinetuneConfig.from_file(best["best_config_file"])
    assert best_cfg.optim.lr == pytest.approx(best["best_params"]["lr"])
    from raycad.cli import main

    runs = tmp_path / "finetune"
    assert main(["finetune", "--config", best["best_config_file"], "--epochs", "1", "--output", str(runs),
                 "--name", "from_best"]) == 0
    results = json.loads((runs / "from_best" / "results.json").read_text())
    assert results["epochs_run"] == 1 and results["config"]["optim"]["lr"] == best_cfg.optim.lr


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (its private Ray instance), by pid."""
    pids = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def _starts(log: Path) -> list[str]:
    if not log.is_file():
        return []
    return [json.loads(line)["trial_id"] for line in log.read_text().splitlines() if line.strip()]


def test_killed_sweep_resumes_without_rerunning_finished_trials(tiny_tasks, tmp_path):
    out = tmp_path / "out"
    sweep = _sweep_yaml(tmp_path / "sweep.yaml", tiny_tasks[:1], name="killed", output_dir=str(out),
                        asha={"enabled": False})
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "raycad.cli", "tune", "--config", str(sweep)]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    trials_log = out / "killed" / "trials" / "promoters_a.jsonl"
    state_dir = out / "killed" / "ray" / "tune" / "promoters_a"
    try:
        # Kill once the first trial has finished (a second has started) and Tune has saved that state.
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_starts(trials_log)) >= 2 and _terminated_trials(state_dir):
                break
            time.sleep(1.0)
        assert proc.poll() is None, f"sweep ended before it could be killed:\n{log_path.read_text()[-3000:]}"
        finished_before = _terminated_trials(state_dir)
        assert finished_before, "no finished trial recorded before the deadline"
    finally:
        if proc.poll() is None:
            _kill_tree(proc)

    resumed = subprocess.run([sys.executable, "-m", "raycad.cli", "tune", "--resume", str(out / "killed")],
                             check=False, capture_output=True, text=True, env=env, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    row = json.loads((out / "killed" / "tasks" / "promoters_a.json").read_text())
    starts = _starts(trials_log)
    assert row["trials"] == 3 and row["trials_errored"] == 0 and row["trials_completed"] == 3
    for trial_id in finished_before:
        assert starts.count(trial_id) == 1, f"finished trial {trial_id} was re-run: {starts}"
    assert len(set(starts)) == 3
    assert (out / "killed" / "summary.md").is_file()


def _terminated_trials(state_dir: Path) -> list[str]:
    """Trial ids Tune's saved experiment state lists as TERMINATED."""
    from raycad.tune.sweep import saved_trial_states

    return [tid for tid, status in saved_trial_states(state_dir).items() if status == "TERMINATED"]
