"""End-to-end fine-tuning on a local 2-CPU Ray: CLI finetune/evaluate/predict with LoRA and export, resume
after a worker failure, and 1 vs 2 workers at the same global batch. Tiny real data (bundled demo rows, 64 bp)
and a tiny Caduceus keep each fit short."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raycad.config import FinetuneConfig

pytestmark = pytest.mark.slow

TINY_MODEL = {"d_model": 32, "n_layer": 1}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """Balanced CSVs (48/16/16 records per class) of real promoter / non-promoter sequences."""
    from raycad.data.loader import BUNDLED_DEMO

    root = tmp_path_factory.mktemp("tiny")
    demo = pd.read_parquet(BUNDLED_DEMO)
    paths = {}
    for split, n in (("train", 48), ("validation", 16), ("test", 16)):
        part = demo[demo.split == split].groupby("label").head(n).sample(frac=1, random_state=0)
        paths[split] = root / f"{split}.csv"
        part[["id", "sequence", "label"]].to_csv(paths[split], index=False)
    return paths


def tiny_cfg(tiny_data: dict[str, Path], tmp_path: Path, **overrides) -> FinetuneConfig:
    return FinetuneConfig().with_overrides({
        "model.preset": "caduceus-ph-1k-d128-l4", "model.overrides": TINY_MODEL,
        "data.train": str(tiny_data["train"]), "data.validation": str(tiny_data["validation"]),
        "data.test": str(tiny_data["test"]), "data.max_length": 64,
        "train.batch_size": 16, "train.epochs": 2, "run.output_dir": str(tmp_path), **overrides})


def test_cli_finetune_evaluate_predict_lora_export(ray_local, tiny_data, tmp_path, capsys) -> None:
    from raycad.cli import main
    from raycad.train.checkpoint import load_exported, load_model_from_checkpoint
    from raycad.train.predict import predict_proba

    out = tmp_path / "runs"
    args = ["finetune", str(tiny_data["train"]), "--workers", "2", "--epochs", "2", "--output", str(out),
            "--name", "cli", "--set", "model.preset=caduceus-ph-1k-d128-l4",
            "--set", "model.overrides={d_model: 32, n_layer: 1}", "--set", "peft.method=lora",
            "--set", f"data.validation={tiny_data['validation']}", "--set", f"data.test={tiny_data['test']}",
            "--set", "data.max_length=64", "--set", "train.batch_size=16"]
    assert main(args) == 0
    run = out / "cli"
    results = json.loads((run / "results.json").read_text())
    assert "raycad finetune: cli" in capsys.readouterr().err  # the results table
    assert results["epochs_run"] == 2 and [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["data"]["splits"]["train"]["records"] == 96 and results["test_metrics"]["test_n"] == 32
    for key in ("test_accuracy", "test_f1", "test_mcc", "test_auroc"):
        assert 0 <= results["test_metrics"][key] <= 1 or key == "test_mcc"
    trainable, total = results["parameters"]["trainable"], results["parameters"]["total"]
    assert 0 < trainable < total
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    assert (run / "learning_curve.png").stat().st_size > 1000

    # the exported (LoRA-merged) model predicts what the best training checkpoint predicts
    exported, meta = load_exported(run / "model")
    trained, _ = load_model_from_checkpoint(results["best_checkpoint"])
    seqs = pd.read_csv(tiny_data["test"]).sequence.tolist()
    assert meta["conjoin_eval"] is True  # the default: both strands' logits averaged at evaluation
    p_export = predict_proba(exported, seqs, max_length=64, conjoin=True)
    p_ckpt = predict_proba(trained, seqs, max_length=64, conjoin=True)
    np.testing.assert_allclose(p_export, p_ckpt, atol=1e-5)
    assert meta["class_names"] == ["0", "1"] and not any("lora" in k for k in exported.state_dict())

    # evaluate: same metrics as the run's test evaluation
    metrics_path = tmp_path / "eval.json"
    assert main(["evaluate", str(run / "model"), str(tiny_data["test"]), "--json", str(metrics_path)]) == 0
    evaluated = json.loads(metrics_path.read_text())
    assert evaluated["test_n"] == 32
    assert evaluated["test_accuracy"] == pytest.approx(results["test_metrics"]["test_accuracy"])
    assert evaluated["test_auroc"] == pytest.approx(results["test_metrics"]["test_auroc"], abs=1e-6)

    # predict: a FASTA in, one CSV row of class probabilities per record, in order
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">r{i} test\n{s[:30]}\n{s[30:]}\n" for i, s in enumerate(seqs)))
    assert main(["predict", str(run / "model"), str(fasta), "-o", str(tmp_path / "pred.csv")]) == 0
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert pred.id.tolist() == [f"r{i}" for i in range(len(seqs))]
    np.testing.assert_allclose(pred[["prob_0", "prob_1"]].to_numpy(), p_export, atol=1e-5)
    assert (pred.predicted_label == p_export.argmax(1)).all()


def test_resume_after_failure_runs_each_epoch_once(ray_local, tiny_data, tmp_path) -> None:
    from raycad.data import prepare_datasets
    from raycad.train.trainer import build_trainer

    marker = str(tmp_path / "failed-once")

    def fail_once_after_first_checkpoint(config):
        """The real loop, with rank 0 crashing right after reporting epoch 1 (first attempt only)."""
        import ray.train

        from raycad.train.loop import train_loop_per_worker

        real_report = ray.train.report

        def report(metrics, checkpoint=None, **kwargs):
            real_report(metrics, checkpoint=checkpoint, **kwargs)
            if metrics["epoch"] == 1 and ray.train.get_context().get_world_rank() == 0 \
                    and not os.path.exists(marker):
                Path(marker).touch()
                raise RuntimeError("injected failure after the epoch-1 checkpoint")

        ray.train.report = report
        try:
            return train_loop_per_worker(config)
        finally:
            ray.train.report = real_report

    cfg = tiny_cfg(tiny_data, tmp_path, **{"train.epochs": 3, "run.max_failures": 1, "run.checkpoints_to_keep": 5})
    data = prepare_datasets(cfg)
    result = build_trainer(cfg, data, name="resume", train_loop=fail_once_after_first_checkpoint).fit()
    assert os.path.exists(marker), "the failure was not injected"
    assert result.error is None
    history = result.return_value["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    steps = [h["step"] for h in history]  # 48 per worker / 8 per batch = 6 optimizer steps per epoch
    assert steps == [6, 12, 18]
    saved = sorted(Path(result.path).glob("epoch_*"))
    assert [p.name for p in saved] == ["epoch_0001", "epoch_0002", "epoch_0003"]


def test_two_workers_follow_one_worker_loss_curve(ray_local, tiny_data, tmp_path) -> None:
    from raycad.data import prepare_datasets
    from raycad.train.trainer import build_trainer

    curves = {}
    for workers in (1, 2):
        cfg = tiny_cfg(tiny_data, tmp_path, **{"scaling.num_workers": workers, "train.epochs": 3,
                                               "data.rc_augment": 0.0, "optim.lr": 5e-3})
        data = prepare_datasets(cfg)
        result = build_trainer(cfg, data, name=f"w{workers}").fit()
        assert result.error is None
        curves[workers] = result.return_value["history"]
    one, two = curves[1], curves[2]
    assert [h["step"] for h in one] == [h["step"] for h in two]  # same global batch -> same optimizer steps
    assert [h["train_samples"] for h in one] == [h["train_samples"] for h in two] == [96] * 3
    # The workers' batches are drawn differently (streaming_split + per-rank shuffle), so the curves agree
    # statistically, not bit for bit: DDP's gradient averaging makes 2 x 8 behave like 1 x 16.
    curve = {w: [(round(h["train_loss"], 4), round(h["val_loss"], 4)) for h in c] for w, c in curves.items()}
    for a, b in zip(one, two):
        assert a["val_n"] == b["val_n"] == 32
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05, curve
        assert abs(a["val_loss"] - b["val_loss"]) < 0.05, curve
    assert all(c[-1]["train_loss"] < c[0]["train_loss"] - 0.02 for c in (one, two)), curve  # it does learn
