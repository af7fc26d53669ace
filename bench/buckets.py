"""Epoch time on variable-length data: everything padded to the longest record vs length-bucketed batches.

    python bench/buckets.py [--n 128] [--batch-size 16] [--repeats 2]
    python bench/buckets.py --ray [--n 300] [--test-n 200] [--repeats 1]

Generates ``--n`` random records with lengths uniform in 258-3,061 bp (the span of a Genomic Benchmarks
task with variable lengths), tokenizes them to max_length 3,061, and times one training epoch (forward,
backward, AdamW step; demo preset caduceus-ph-1k-d64-l2, 2 torch threads, the default scan) over the same
records in two batchings, interleaved, best of ``--repeats``:

- ``padded``: ``data.padding=max_length``: every batch 3,061 wide (what raycad did before);
- ``bucketed``: `raycad.data.batching.bucket_batches` (padding "longest", pad_multiple 16): each batch
  pads to its own longest record.

It times the training step on the batches the loader would yield, in one process (no Ray), so the ratio
is the padding saved; the Ray Train overheads are the same for both.

``--ray`` runs the real job instead: ``raycad finetune`` (`raycad.train.trainer.finetune`, 2 Ray Train
workers, 1 epoch, demo preset, the same seed) on a generated labelled CSV of ``--n`` records (258-3,061 bp;
label 1 = GC-rich, 0 = AT-rich: a signal the model can pick up in one epoch) with ``data.padding=max_length``
and with ``data.padding=longest`` (length-bucketed), alternating, and reports the epoch time Ray Train
measured and the test accuracy on a separate generated test file of ``--test-n`` records.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO_PRESET = "model.preset=caduceus-ph-1k-d64-l2"
"""The model every measurement in BENCHMARKS.md's bucketing section used (fine-tuning's default is now d96)."""


def labelled_csv(path: Path, n: int, seed: int, max_length: int = 3061) -> Path:
    """``n`` records of 258-``max_length`` bp with a GC-content label (1: 65% GC, 0: 35% GC), as CSV."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    rows = []
    for i, (length, label) in enumerate(zip(rng.integers(258, max_length + 1, size=n), labels)):
        gc = 0.65 if label else 0.35
        bases = rng.choice(list("ACGT"), size=length, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
        rows.append(f"r{seed}_{i},{''.join(bases)},{label}")
    path.write_text("id,sequence,label\n" + "\n".join(rows) + "\n")
    return path


def ray_epochs(args: argparse.Namespace) -> int:
    """The real ``raycad finetune`` job, padded vs bucketed (see the module docstring)."""
    from raycad.config import FinetuneConfig
    from raycad.train import finetune

    work = Path(tempfile.mkdtemp(prefix="raycad-bench-buckets-"))
    train, test = labelled_csv(work / "train.csv", args.n, 0), labelled_csv(work / "test.csv", args.test_n, 1)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"max_length": [], "longest": []}
    for rep in range(args.repeats):
        for padding, done in runs.items():
            cfg = FinetuneConfig.load(overrides=[
                DEMO_PRESET, f"data.train={train}", f"data.test={test}", "data.max_length=3061", f"data.padding={padding}",
                "train.epochs=1", "train.seed=0", "baseline.enabled=false", "run.export_model=false",
                f"run.output_dir={work}", f"run.name={padding}-{rep}"])
            result = finetune(cfg, show=False).results
            epoch = result["history"][0]
            done.append({"epoch_s": epoch["epoch_time_s"], "train_s": epoch["train_time_s"],
                                  "train_samples": epoch["train_samples"], "val_accuracy": epoch["val_accuracy"],
                                  "test_accuracy": result["test_metrics"]["test_accuracy"],
                                  "test_s": result["timings"]["test_eval_s"], "total_s": result["timings"]["total_s"]})
            print(padding, done[-1], flush=True)
    best = {k: min(v, key=lambda r: r["epoch_s"]) for k, v in runs.items()}
    print(f"\n{args.n} training records (258-3,061 bp), test file of {args.test_n}; best of {args.repeats}; "
          f"load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| data.padding | epoch (s) | train phase (s) | train seq/s | test eval (s) | val accuracy | test accuracy "
          "| speed-up (epoch) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in best.items():
        print(f"| {name} | {r['epoch_s']:.1f} | {r['train_s']:.1f} | {r['train_samples'] / r['train_s']:.2f} | "
              f"{r['test_s']:.1f} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | "
              f"{best['max_length']['epoch_s'] / r['epoch_s']:.2f}x |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="records (default 128; 300 with --ray)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None, help="default 2; 1 with --ray")
    parser.add_argument("--ray", action="store_true", help="time the real raycad finetune job on Ray instead")
    parser.add_argument("--test-n", type=int, default=200, help="test records (--ray)")
    args = parser.parse_args(argv)
    if args.ray:
        args.n, args.repeats = args.n or 300, args.repeats or 1
        return ray_epochs(args)
    args.n, args.repeats = args.n or 128, args.repeats or 2

    import torch

    from raycad.config import FinetuneConfig
    from raycad.data.batching import PaddingRule, bucket_batches
    from raycad.data.loader import BatchCollator
    from raycad.model import CaduceusTokenizer
    from raycad.train.build import build_model
    from raycad.train.loop import build_optimizer

    torch.set_num_threads(2)
    max_length = 3061
    rng = np.random.default_rng(0)
    lengths = rng.integers(258, max_length + 1, size=args.n)
    seqs = ["".join(rng.choice(list("ACGT"), size=k)) for k in lengths]
    ids = CaduceusTokenizer().encode_batch(seqs, max_length).input_ids
    labels = rng.integers(0, 2, size=args.n)
    keys = rng.integers(0, 2**63, size=args.n).astype(np.uint64)
    collate = BatchCollator(padding="max_length")
    padded = [collate({"input_ids": ids[s:s + args.batch_size], "label": labels[s:s + args.batch_size],
                       "key": keys[s:s + args.batch_size]}) for s in range(0, args.n, args.batch_size)]
    rule = PaddingRule(max_length, "longest", 16)
    rows = bucket_batches({"input_ids": ids, "label": labels, "key": keys}, batch_size=args.batch_size, rule=rule,
                          seed=0)
    bucketed = [BatchCollator(padding="longest", pad_multiple=16)(
        {"input_ids": i, "label": la, "key": k}) for i, la, k in zip(rows["input_ids"], rows["label"], rows["key"])]

    cfg = FinetuneConfig.load(overrides=[DEMO_PRESET])
    model = build_model(cfg, 2, ["0", "1"])
    optimizer = build_optimizer(model, cfg)

    def epoch(batches: list[dict]) -> float:
        start = time.perf_counter()
        for batch in batches:
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    best = {"padded": float("inf"), "bucketed": float("inf")}
    for _ in range(args.repeats):
        for name, batches in (("padded", padded), ("bucketed", bucketed)):
            seconds = epoch(batches)
            best[name] = min(best[name], seconds)
            print(f"{name}: {seconds:.1f} s", flush=True)
    tokens = {"padded": sum(b["input_ids"].numel() for b in padded),
              "bucketed": sum(b["input_ids"].numel() for b in bucketed)}
    print(f"\n{args.n} records of {lengths.min()}-{lengths.max()} bp, batch {args.batch_size}, best of {args.repeats}")
    print("| batching | tokens incl. padding | epoch (s) | seq/s | speed-up |\n|---|---:|---:|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {tokens[name]:,} | {seconds:.1f} | {args.n / seconds:.1f} | "
              f"{best['padded'] / seconds:.2f}x |")
    print(f"load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
