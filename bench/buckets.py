"""Epoch time on variable-length data: everything padded to the longest record vs length-bucketed batches.

    python bench/buckets.py [--n 128] [--batch-size 16] [--repeats 2]

Generates ``--n`` random records with lengths uniform in 258-3,061 bp (the span of a Genomic Benchmarks
task with variable lengths), tokenizes them to max_length 3,061, and times one training epoch (forward,
backward, AdamW step; demo preset caduceus-ph-1k-d64-l2, 2 torch threads, the default scan) over the same
records in two batchings, interleaved, best of ``--repeats``:

- ``padded``: ``data.padding=max_length``: every batch 3,061 wide (what raycad did before);
- ``bucketed``: `raycad.data.batching.bucket_batches` (padding "longest", pad_multiple 16): each batch
  pads to its own longest record.

It times the training step on the batches the loader would yield, in one process (no Ray), so the ratio
is the padding saved; the Ray Train overheads are the same for both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

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

    cfg = FinetuneConfig()
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
