"""End-to-end pre-training on a local 2-CPU Ray: ``raycad pretrain`` streaming a gzipped multi-record FASTA
from a moto S3 endpoint (held-out contig, mostly-N windows, export loaded into a classifier), and a resume
from a mid-epoch checkpoint after an injected worker failure. The "genome" is real promoter sequences of the
bundled demo joined into contigs with an assembly gap; a tiny Caduceus keeps each fit short."""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from raycad.config import PretrainConfig

pytestmark = pytest.mark.slow

MAX_LENGTH = 128
TINY = ["--set", "model.preset=caduceus-ps-1k-d128-l4", "--set", "model.overrides={d_model: 16, n_layer: 1}"]


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """chr1 (with a 600-N gap), chr2, chr3 and a short unplaced contig, as a gzipped FASTA (60 bp lines)."""
    from raycad.data.loader import BUNDLED_DEMO

    demo = pd.read_parquet(BUNDLED_DEMO)
    seqs = demo[demo.split == "train"].sequence.tolist()
    contigs = {"chr1": "".join(seqs[:8]) + "N" * 600 + "".join(seqs[8:12]),
               "chr2": "".join(seqs[12:22]), "chr3": "".join(seqs[22:28]), "unplaced": seqs[28][:90]}
    path = tmp_path_factory.mktemp("genome") / "genome.fa.gz"
    with gzip.open(path, "wt") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name} test contig\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    return path, contigs


def expected_windows(contigs: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(windows, mostly-N windows) per contig for adjacent windows, computed the slow way."""
    out = {}
    for name, seq in contigs.items():
        n = len(seq)
        count = 1 + math.ceil(max(0, n - MAX_LENGTH) / MAX_LENGTH)
        starts = [min(k * MAX_LENGTH, max(n - MAX_LENGTH, 0)) for k in range(count)]
        mostly_n = sum(seq[s:s + MAX_LENGTH].count("N") > 0.5 * min(n, MAX_LENGTH) for s in starts)
        out[name] = (count, mostly_n)
    return out


def test_cli_pretrain_streams_s3_holds_out_a_contig_and_exports(ray_local, s3_server, genome, tmp_path) -> None:
    import boto3

    from raycad.cli import main
    from raycad.model import CaduceusForMaskedLM, CaduceusForSequenceClassification

    path, contigs = genome
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="raycad-genomes")
    s3.upload_file(str(path), "raycad-genomes", "asm/genome.fa.gz")
    out = tmp_path / "runs"
    args = ["pretrain", "s3://raycad-genomes/asm/genome.fa.gz", "--holdout", "chr3", "--max-length",
            str(MAX_LENGTH), "--max-steps", "6", "--workers", "2", "-o", str(out), "--name", "s3",
            "--set", f"data.s3_endpoint={s3_server}", "--set", "train.batch_size=8",
            "--set", "train.log_every_steps=4", *TINY]
    assert main(args) == 0
    results = json.loads((out / "s3" / "results.json").read_text())

    expected = expected_windows(contigs)
    counts = results["data"]["counts"]["train"]
    assert counts["records"] == 4 and counts["bases"] == sum(map(len, contigs.values()))
    assert counts["windows"] == sum(w for w, _ in expected.values())
    assert counts["mostly_n"] == sum(n for _, n in expected.values()) >= 4  # the 600-N gap
    assert counts["heldout"] == expected["chr3"][0]  # the held-out contig, and only it
    assert counts["train"] == counts["windows"] - counts["mostly_n"] - counts["heldout"]
    # 46 training windows: 23 per worker, 6 batches of 4 (the last one of 3) = exactly one epoch in 6 steps
    assert counts["train"] == 46 and results["plan"]["steps_per_epoch"] == 6
    assert results["steps"] == 6 and results["epochs_completed"] == 1 and results["windows_trained"] == 46
    kinds = [(h["kind"], h["step"]) for h in results["history"]]
    assert kinds == [("band", 4), ("epoch", 6)]
    final = results["final_held_out"]
    assert final["val_masked_tokens"] > 0 and final["val_perplexity"] == pytest.approx(math.exp(final["val_loss"]))
    assert 0 <= final["val_accuracy"] <= 1 and (out / "s3" / "learning_curve.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "s3" / "metrics.csv")) == 2

    # the export: the masked-LM in the released layout, and the backbone for a classifier
    model_dir = out / "s3" / "model"
    mlm = CaduceusForMaskedLM.from_pretrained(model_dir)
    classifier = CaduceusForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    for key, value in mlm.caduceus.state_dict().items():
        assert (classifier.caduceus.state_dict()[key] == value).all(), key
    assert json.loads((model_dir / "raycad.json").read_text())["objective"] == "masked-lm"


def test_resume_from_a_mid_epoch_checkpoint(ray_local, genome, tmp_path) -> None:
    from raycad.pretrain.data import prepare_pretrain_data
    from raycad.pretrain.recipe import build_pretrain_trainer, step_plan

    marker = str(tmp_path / "failed-once")

    def fail_once_mid_epoch(config):
        """The real loop, with the worker crashing right after the step-4 checkpoint (first attempt only)."""
        import ray.train

        from raycad.pretrain.loop import pretrain_loop_per_worker

        real_report = ray.train.report

        def report(metrics, checkpoint=None, **kwargs):
            real_report(metrics, checkpoint=checkpoint, **kwargs)
            if metrics["step"] == 4 and not os.path.exists(marker):
                Path(marker).touch()
                raise RuntimeError("injected failure after the step-4 checkpoint")

        ray.train.report = report
        try:
            return pretrain_loop_per_worker(config)
        finally:
            ray.train.report = real_report

    path, _ = genome
    cfg = PretrainConfig.load(overrides=[
        f"data.train={path}", f"data.max_length={MAX_LENGTH}", "data.val_fraction=0.2", "scaling.num_workers=1",
        "train.batch_size=8", "train.epochs=2", "train.log_every_steps=2", "train.checkpoint_every_steps=2",
        "run.max_failures=1", "run.checkpoints_to_keep=20", f"run.output_dir={tmp_path}",
        "model.preset=caduceus-ps-1k-d128-l4", "model.overrides={d_model: 16, n_layer: 1}"])
    data = prepare_pretrain_data(cfg)
    plan = step_plan(cfg, data.num_train)
    per_epoch = plan["steps_per_epoch"]
    assert per_epoch > 4 and plan["total_steps"] == 2 * per_epoch  # step 4 is inside the first epoch
    result = build_pretrain_trainer(cfg, data, name="resume", plan=plan, train_loop=fail_once_mid_epoch).fit()
    assert os.path.exists(marker), "the failure was not injected"
    assert result.error is None
    history = result.return_value["history"]
    # exactly the rows of an uninterrupted run: a band every 2 steps (but at an epoch's end), a row per epoch
    bands = [("band", s) for s in range(2, 2 * per_epoch, 2) if s % per_epoch]
    expected = sorted(bands + [("epoch", per_epoch), ("epoch", 2 * per_epoch)], key=lambda row: row[1])
    assert [(h["kind"], h["step"]) for h in history] == expected
    assert result.return_value["step"] == 2 * per_epoch and result.return_value["epoch"] == 2
    assert result.return_value["windows"] == 2 * data.num_train  # every window once per epoch, none twice
    resumed = json.loads((Path(result.path) / "step_00000004" / "state.json").read_text())
    assert resumed["epoch"] == 0 and resumed["batches_done"] == 4  # a mid-epoch checkpoint
