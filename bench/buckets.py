"""Epoch time on variable-length data: everything padded to the longest record vs length-bucketed batches.

    python bench/buckets.py [--n 128] [--batch-size 16] [--repeats 2]
    python bench/buckets.py --ray [--n 300] [--test-n 200] [--repeats 1] [--chunked-before] [--lengths uniform]

Generates ``--n`` random records of 258-3,061 bp (``--lengths``, below), tokenizes them to max_length 3,061,
and times one training epoch (forward, backward, AdamW step; demo preset caduceus-ph-1k-d64-l2, 2 torch
threads, the default scan) over the same records in two batchings, interleaved, best of ``--repeats``:

- ``padded``: ``data.padding=max_length``: every batch 3,061 wide (what raycad did before);
- ``bucketed``: `raycad.data.batching.bucket_batches` (padding "longest", pad_multiple 16): each batch
  pads to its own longest record.

It times the training step on the batches the loader would yield, in one process (no Ray), so the ratio
is the padding saved; the Ray Train overheads are the same for both.

``--ray`` runs the real job instead: ``raycad finetune`` (`raycad.train.trainer.finetune`, 2 Ray Train
workers, 1 epoch, demo preset, the same seed) on a generated labelled CSV of ``--n`` records (258-3,061 bp;
label 1 = GC-rich, 0 = AT-rich: a signal the model can pick up in one epoch) with ``data.padding=max_length``
and with ``data.padding=longest`` (length-bucketed), alternating, and reports the epoch time Ray Train
measured and the test accuracy on a separate generated test file of ``--test-n`` records. ``--chunked-before``
adds the state before issue 12 as a third run: padded, and the chunked PyTorch scan (``model.scan_impl=chunked``).

``--lengths`` (default ``stark``) draws the record lengths from drosophila_enhancers_stark's test split (the
Genomic Benchmarks task of 258-3,061 bp: 1,730 records, median 2,143, mean 2,124; `STARK_LENGTH_QUANTILES`,
computed from the task's published coordinates); ``uniform`` draws them uniformly in 258-3,061 bp.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STARK_LENGTH_QUANTILES = [258, 2065, 2081, 2091, 2098, 2103, 2110, 2117, 2125, 2133, 2143, 2153, 2165, 2175, 2190,
                          2201, 2214, 2237, 2267, 2314, 3061]
"""Record lengths (bp) at the 0, 5, ..., 100th percentiles of drosophila_enhancers_stark's test split (end - start
of the 1,730 regions in the Genomic Benchmarks coordinate files)."""

DEMO_PRESET = "model.preset=caduceus-ph-1k-d64-l2"
"""The model every measurement in BENCHMARKS.md's bucketing section used (fine-tuning's default is now d96)."""


def record_lengths(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """``n`` lengths of 258-3,061 bp: ``stark`` follows `STARK_LENGTH_QUANTILES`, ``uniform`` is uniform."""
    if kind == "uniform":
        return rng.integers(258, 3062, size=n)
    return np.interp(rng.random(n), np.linspace(0, 1, len(STARK_LENGTH_QUANTILES)),
                     STARK_LENGTH_QUANTILES).round().astype(int)


def labelled_csv(path: Path, n: int, seed: int, lengths: str) -> Path:
    """``n`` records (`record_lengths`) with a GC-content label (1: 65% GC, 0: 35% GC), as CSV."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    rows = []
    for i, (length, label) in enumerate(zip(record_lengths(rng, n, lengths), labels)):
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
    train = labelled_csv(work / "train.csv", args.n, 0, args.lengths)
    test = labelled_csv(work / "test.csv", args.test_n, 1, args.lengths)
    load_before = os.getloadavg()[0]
    arms = {"max_length": ["data.padding=max_length"], "longest": ["data.padding=longest"]}
    if args.chunked_before:
        arms = {"max_length, chunked scan": ["data.padding=max_length", "model.scan_impl=chunked"], **arms}
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for rep in range(args.repeats):
        for arm, done in runs.items():
            cfg = FinetuneConfig.load(overrides=[
                DEMO_PRESET, f"data.train={train}", f"data.test={test}", "data.max_length=3061", *arms[arm],
                "train.epochs=1", "train.seed=0", "baseline.enabled=false", "run.export_model=false",
                f"run.output_dir={work}", f"run.name=run-{len(done)}-{list(arms).index(arm)}"])
            result = finetune(cfg, show=False).results
            epoch = result["history"][0]
            done.append({"epoch_s": epoch["epoch_time_s"], "train_s": epoch["train_time_s"],
                                  "train_samples": epoch["train_samples"], "val_accuracy": epoch["val_accuracy"],
                                  "test_accuracy": result["test_metrics"]["test_accuracy"],
                                  "test_s": result["timings"]["test_eval_s"], "total_s": result["timings"]["total_s"]})
            print(arm, done[-1], flush=True)
    best = {k: min(v, key=lambda r: r["epoch_s"]) for k, v in runs.items()}
    print(f"\n{args.n} training records (258-3,061 bp, {args.lengths} lengths), test file of {args.test_n}; "
          f"best of {args.repeats}; "
          f"load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| data.padding | epoch (s) | train phase (s) | train seq/s | test eval (s) | val accuracy | test accuracy "
          "| speed-up (epoch) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in best.items():
        print(f"| {name} | {r['epoch_s']:.1f} | {r['train_s']:.1f} | {r['train_samples'] / r['train_s']:.2f} | "
              f"{r['test_s']:.1f} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | "
              f"{best['max_length']['epoch_s'] / r['epoch_s']:.2f}x |")
    if args.chunked_before:
        before = best["max_length, chunked scan"]["epoch_s"]
        print(f"\nbefore issue 12 (padded, chunked scan) -> now (bucketed, default scan): "
              f"{before / best['longest']['epoch_s']:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="records (default 128; 300 with --ray)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None, help="default 2; 1 with --ray")
    parser.add_argument("--ray", action="store_true", help="time the real raycad finetune job on Ray instead")
    parser.add_argument("--test-n", type=int, default=200, help="test records (--ray)")
    parser.add_argument("--lengths", choices=("stark", "uniform"), default="stark",
                        help="record lengths: drosophila_enhancers_stark's, or uniform in 258-3,061 bp")
    parser.add_argument("--chunked-before", action="store_true",
                        help="--ray: also run padded + chunked scan (before issue 12)")
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
    lengths = record_lengths(rng, args.n, args.lengths)
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
