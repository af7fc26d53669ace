"""End-to-end fine-tuning on a local 2-CPU Ray: CLI finetune/evaluate/predict with LoRA and export, resume
after a worker failure (each epoch trained once), and 2 workers x batch b = 1 worker x batch 2b. Tiny real
data (bundled demo rows, 64 bp) and a tiny Caduceus keep each fit short."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

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
    from raycad.infer import Predictor, read_spec
    from raycad.train.checkpoint import load_exported, load_model_from_checkpoint

    out = tmp_path / "runs"
    # training records of 20-251 bp: length-bucketed global batches, each of the 2 workers on its half
    train = pd.read_csv(tiny_data["train"])
    train["sequence"] = [s[:n] for s, n in zip(train.sequence, np.resize([20, 36, 52, 251], len(train)))]
    train.to_csv(tmp_path / "train.csv", index=False)
    args = ["finetune", str(tmp_path / "train.csv"), "--workers", "2", "--epochs", "2", "--output", str(out),
            "--name", "cli", "--set", "model.preset=caduceus-ph-1k-d128-l4",
            "--set", "model.overrides={d_model: 32, n_layer: 1}", "--set", "peft.method=lora",
            "--set", f"data.validation={tiny_data['validation']}", "--set", f"data.test={tiny_data['test']}",
            "--set", "data.max_length=64", "--set", "train.batch_size=16", "--set", "train.weight_average=0.9"]
    assert main(args) == 0
    run = out / "cli"
    results = json.loads((run / "results.json").read_text())
    err = capsys.readouterr().err
    assert "raycad finetune: cli" in err and "-mer LR (C=" in err  # the results table, baseline beside the model
    assert "length buckets: 6 global batches of ~16 records" in err
    assert "LoRA without pretrained weights" in err  # peft.method=lora on a random init is warned about
    baseline = results["baseline"]  # the k-mer baseline on the very same records
    assert baseline["records"] == {"train": 96, "validation": 32, "test": 32} and baseline["test_n"] == 32
    assert baseline["k"] in (3, 4, 5, 6) and 0 <= baseline["test_accuracy"] <= 1
    assert results["epochs_run"] == 2 and [h["epoch"] for h in results["history"]] == [1, 2]
    # bucketed: 6 global batches of 16 an epoch, every record trained (none left out by a shard split)
    assert [(h["step"], h["train_samples"]) for h in results["history"]] == [(6, 96), (12, 96)]
    assert results["data"]["splits"]["train"]["records"] == 96 and results["test_metrics"]["test_n"] == 32
    for key in ("test_accuracy", "test_f1", "test_mcc", "test_auroc"):
        assert 0 <= results["test_metrics"][key] <= 1 or key == "test_mcc"
    trainable, total = results["parameters"]["trainable"], results["parameters"]["total"]
    assert 0 < trainable < total
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    assert (run / "learning_curve.png").stat().st_size > 1000
    # the test evaluation ran on Ray Data actors, not in this (the driver's) process
    assert results["test_eval"]["actor_processes"] and os.getpid() not in results["test_eval"]["actor_processes"]

    # the exported (LoRA-merged) model predicts what the best training checkpoint predicts
    exported, meta = load_exported(run / "model")
    trained, _ = load_model_from_checkpoint(results["best_checkpoint"])
    seqs = pd.read_csv(tiny_data["test"]).sequence.tolist()
    assert meta["conjoin_eval"] is True  # the default: both strands' logits averaged at evaluation
    spec = read_spec(run / "model")
    assert spec.padding.to_meta() == {"max_length": 64, "padding": "longest", "pad_multiple": 16}
    batch = {"sequence": np.array(seqs, dtype=object)}
    p_export = Predictor.from_model(exported, spec)(batch)
    p_export = np.stack([p_export["prob_0"], p_export["prob_1"]], axis=1)
    p_ckpt = Predictor.from_model(trained, spec)(batch)
    p_ckpt = np.stack([p_ckpt["prob_0"], p_ckpt["prob_1"]], axis=1)
    np.testing.assert_allclose(p_export, p_ckpt, atol=1e-5)
    assert meta["class_names"] == ["0", "1"] and not any("lora" in k for k in exported.state_dict())
    # with train.weight_average the checkpoint's model (hence test, export, predict) carries the averaged weights
    best = Path(results["best_checkpoint"])
    averaged, raw = load_file(str(best / "average.safetensors")), load_file(str(best / "trainable.safetensors"))
    params = dict(load_model_from_checkpoint(best, merge=False)[0].named_parameters())
    assert set(averaged) == set(raw) and all(torch.equal(params[k], v) for k, v in averaged.items())
    assert not all(torch.equal(raw[k], v) for k, v in averaged.items())

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


def test_resume_after_failure_trains_each_epoch_once(ray_local, tiny_data, tmp_path) -> None:
    """Rank 0 crashes right after reporting epoch 1; the restarted attempt must resume at epoch 2.

    Every call of the loop's training-batch iterator is recorded with its attempt, so a restart from scratch
    (which writes the same history, steps and checkpoint names) cannot pass.
    """
    from raycad.data import prepare_datasets
    from raycad.train.trainer import build_trainer

    marker, trained_log = tmp_path / "failed-once", tmp_path / "trained.jsonl"

    def fail_once_after_first_checkpoint(config):
        import ray.train

        import raycad.data
        from raycad.train.loop import train_loop_per_worker

        attempt = 2 if marker.exists() else 1
        rank = ray.train.get_context().get_world_rank()
        real_report, real_iter_batches = ray.train.report, raycad.data.iter_batches

        def iter_batches(shard, cfg, split, batch_size, epoch, **kwargs):
            if split == "train" and rank == 0:
                with open(trained_log, "a") as fh:
                    fh.write(json.dumps({"attempt": attempt, "epoch": epoch + 1}) + "\n")
            return real_iter_batches(shard, cfg, split, batch_size, epoch, **kwargs)

        def report(metrics, checkpoint=None, **kwargs):
            real_report(metrics, checkpoint=checkpoint, **kwargs)
            if metrics["epoch"] == 1 and rank == 0 and not marker.exists():
                marker.touch()
                raise RuntimeError("injected failure after the epoch-1 checkpoint")

        ray.train.report, raycad.data.iter_batches = report, iter_batches
        try:
            return train_loop_per_worker(config)
        finally:
            ray.train.report, raycad.data.iter_batches = real_report, real_iter_batches

    cfg = tiny_cfg(tiny_data, tmp_path, **{"train.epochs": 3, "run.max_failures": 1, "run.checkpoints_to_keep": 5})
    data = prepare_datasets(cfg)
    result = build_trainer(cfg, data, name="resume", train_loop=fail_once_after_first_checkpoint).fit()
    assert marker.exists(), "the failure was not injected"
    assert result.error is None
    trained = [json.loads(line) for line in trained_log.read_text().splitlines()]
    assert trained == [{"attempt": 1, "epoch": 1}, {"attempt": 2, "epoch": 2}, {"attempt": 2, "epoch": 3}]
    history = result.return_value["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    steps = [h["step"] for h in history]  # 48 per worker / 8 per batch = 6 optimizer steps per epoch
    assert steps == [6, 12, 18]
    saved = sorted(Path(result.path).glob("epoch_*"))
    assert [p.name for p in saved] == ["epoch_0001", "epoch_0002", "epoch_0003"]


def test_two_workers_of_batch_b_equal_one_worker_of_batch_2b(ray_local, tiny_data, tmp_path) -> None:
    """The real loop (DDP, AdamW, clipping, schedule) fed fixed batches: rank r of w gets slice r of each
    global batch. After an epoch, both ranks hold identical parameters, equal to one worker's on the whole
    batches to 1e-5: a broken gradient all-reduce cannot pass."""
    import torch

    from raycad.data import prepare_datasets
    from raycad.train.build import build_model
    from raycad.train.trainer import build_trainer

    global_batch, length = 16, 64
    gen = torch.Generator().manual_seed(0)
    records = {"input_ids": torch.randint(7, 12, (96, length), generator=gen), "labels": torch.arange(96) % 2}
    records["input_ids"][::3, :10] = 4  # some left padding

    def loop_on_fixed_batches(config):
        import ray.train

        import raycad.data
        from raycad.train import loop

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        real_iter_batches, real_step = raycad.data.iter_batches, loop._optimizer_step
        trained: list = []

        def iter_batches(shard, cfg, split, batch_size, epoch, **kwargs):
            if split != "train":
                return real_iter_batches(shard, cfg, split, batch_size, epoch, **kwargs)
            assert batch_size * world == global_batch
            return ({k: v[start + rank * batch_size:start + (rank + 1) * batch_size] for k, v in records.items()}
                    for start in range(0, len(records["labels"]), global_batch))

        def optimizer_step(optimizer, scheduler, scaler, params, grad_clip):
            trained[:] = params
            return real_step(optimizer, scheduler, scaler, params, grad_clip)

        raycad.data.iter_batches, loop._optimizer_step = iter_batches, optimizer_step
        try:
            out = loop.train_loop_per_worker(config)
        finally:
            raycad.data.iter_batches, loop._optimizer_step = real_iter_batches, real_step
        torch.save([p.detach().clone() for p in trained], tmp_path / f"w{world}-rank{rank}.pt")
        return out

    for workers in (1, 2):
        cfg = tiny_cfg(tiny_data, tmp_path, **{"scaling.num_workers": workers, "train.epochs": 1,
                                               "train.batch_size": global_batch, "optim.lr": 5e-3})
        result = build_trainer(cfg, prepare_datasets(cfg), name=f"w{workers}",
                               train_loop=loop_on_fixed_batches).fit()
        assert result.error is None
        assert result.return_value["history"][0]["step"] == 6

    def load(name):
        return torch.load(tmp_path / name, weights_only=True)

    one, rank0, rank1 = load("w1-rank0.pt"), load("w2-rank0.pt"), load("w2-rank1.pt")
    assert len(one) == len(rank0) == len(rank1) > 0
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))  # DDP keeps the replicas identical
    worst = max((a - b).abs().max().item() for a, b in zip(one, rank0))
    assert worst < 1e-5, worst
    init = [p for p in build_model(cfg, 2).parameters() if p.requires_grad]
    assert max((a - b).abs().max().item() for a, b in zip(one, init)) > 1e-3  # it did train


def test_cli_finetune_cv_on_a_single_labelled_file(ray_local, tiny_data, tmp_path, capsys) -> None:
    """``--cv 5`` end to end on one labelled CSV: a held-out test split, 5 stratified folds, one Ray Train run
    per fold with the baseline beside it, per-fold and aggregate metrics, record ids of every split."""
    from raycad.cli import main

    out = tmp_path / "runs"
    args = ["finetune", str(tiny_data["train"]), "--cv", "5", "--epochs", "1", "--workers", "1", "--output",
            str(out), "--name", "cv", "--set", "model.preset=caduceus-ph-1k-d128-l4",
            "--set", "model.overrides={d_model: 16, n_layer: 1}", "--set", "data.max_length=64",
            "--set", "data.limit=60", "--set", "train.batch_size=16", "--set", "data.test_fraction=0.1"]
    assert main(args) == 0
    run = out / "cv"
    results = json.loads((run / "results.json").read_text())
    assert "mean ± spread" in capsys.readouterr().err  # the CV table
    assert results["cv_folds"] == 5 and "5-fold cross-validation" in results["protocol"]
    # one labelled file (the reader keeps its first 60 records): a stratified 10% test split was held out
    splits = {name: split["records"] for name, split in results["data"]["splits"].items()}
    assert sum(splits.values()) == 60 and 4 <= splits["test"] <= 8 and splits["validation"] >= 4
    n_train, n_test = splits["train"], splits["test"]
    sizes = np.array(results["data"]["fold_sizes_per_class"])  # [fold, class]: stratified
    assert sizes.sum() == n_train and (sizes.max(axis=0) - sizes.min(axis=0) <= 1).all()
    folds = results["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3, 4, 5]
    for f, size in zip(folds, sizes.sum(axis=1)):
        assert f["records"] == {"train": n_train - size, "validation": size, "test": n_test}
        assert 0 <= f["test_accuracy"] <= 1 and 0 <= f["baseline_test_accuracy"] <= 1
    acc = [f["test_accuracy"] for f in folds]
    agg = results["aggregate"]["test_accuracy"]
    assert agg["mean"] == pytest.approx(np.mean(acc)) and agg["spread"] == pytest.approx(max(acc) - min(acc))
    assert results["baseline_aggregate"]["baseline_test_accuracy"]["n"] == 5

    # record ids per split and fold: validation folds partition the CV training records, test is disjoint
    def ids(fold: int, split: str) -> list[str]:
        return pd.read_csv(run / f"fold_{fold}" / "splits" / f"{split}.csv")["id"].tolist()

    held_out = [ids(i, "validation") for i in range(1, 6)]
    everything = set(ids(1, "train")) | set(held_out[0])
    assert sorted(i for fold in held_out for i in fold) == sorted(everything) and len(everything) == n_train
    assert not everything & set(ids(1, "test")) and set(ids(1, "test")) == set(ids(5, "test"))
    assert set(everything) | set(ids(1, "test")) <= set(pd.read_csv(tiny_data["train"])["id"])
    fold1 = json.loads((run / "fold_1" / "results.json").read_text())
    assert fold1["data"]["audit"]["duplicates"]["train/test"]["records"] == n_test
