"""Interpretation benchmarks; results go to the ``## Interpretation`` section of BENCHMARKS.md.

For each ``--presets`` (default: the demo preset ``caduceus-ph-1k-d64-l2`` and ``caduceus-ps-1k-d256-l4``), a
random-init classifier exported with ``max_length`` 251 (weights do not change the cost) is timed on CPU:

* embeddings/s: `raycad.interpret.embed` (read_sequences -> actor pool -> one Parquet file) on the first
  ``--embed-records`` sequences of the bundled demo data, against a plain in-process loop of
  `raycad.interpret.embedding.embed_ids` over the same records and batch size (same torch threads);
* variants/s: `raycad.interpret.score_variants` on a VCF of ``--variants`` alleles (80% SNVs, 10% insertions,
  10% deletions, bgzipped + tabix-indexed) against a reference of two contigs built from the bundled demo's
  real sequences; each allele costs a ref and an alt window, both strands;
* explain: seconds per 251-bp record of `raycad.interpret.explain` (3 x 251 mutants + a gradient pass).

Ray and plain runs are interleaved, best of ``--repeats``; the 1-minute load average is recorded with each
number, because this machine is shared.

    python bench/interpret.py --write
    python bench/interpret.py --embed-records 128 --variants 64 --repeats 1 --write   # on a loaded machine
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from train import run_benchmarks

SECTION = "## Interpretation"
WIDTH = 251


def _export(preset: str, folder: Path) -> Path:
    import torch

    from raycad.model import CaduceusConfig, CaduceusForSequenceClassification
    from raycad.train.checkpoint import export_model

    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(CaduceusConfig.from_preset(preset, num_labels=2))
    return export_model(model, folder / preset, meta={"class_names": ["negative", "positive"], "max_length": WIDTH,
                                                      "truncation": "right", "conjoin_eval": not model.config.rcps})


def _demo_sequences(n: int) -> list[str]:
    import pandas as pd

    from raycad.data.loader import BUNDLED_DEMO

    return pd.read_parquet(BUNDLED_DEMO)["sequence"].head(n).tolist()


def _genome(folder: Path, n_variants: int, seed: int = 0) -> tuple[str, str]:
    """Two contigs of concatenated real demo sequences (faidx-indexed) and a tabix-indexed VCF on them."""
    import pysam

    seqs = _demo_sequences(9034)
    half = len(seqs) // 2
    contigs = {"chrA": "".join(seqs[:half]), "chrB": "".join(seqs[half:])}
    fasta = folder / "genome.fa"
    fasta.write_text("".join(f">{k}\n" + "\n".join(v[i:i + 80] for i in range(0, len(v), 80)) + "\n"
                             for k, v in contigs.items()))
    pysam.faidx(str(fasta))
    rng = random.Random(seed)
    rows = []
    for i in range(n_variants):
        contig = rng.choice(sorted(contigs))
        seq = contigs[contig]
        start = rng.randrange(1000, len(seq) - 1000)
        kind = rng.random()
        if kind < 0.8:
            ref, alt = seq[start], rng.choice([b for b in "ACGT" if b != seq[start]])
        elif kind < 0.9:
            ref, alt = seq[start], seq[start] + "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 10)))
        else:
            ref, alt = seq[start:start + rng.randint(2, 11)], seq[start]
        rows.append((contig, start + 1, f"v{i}", ref, alt))
    rows.sort(key=lambda r: (r[0], r[1]))
    header = ["##fileformat=VCFv4.2", *(f"##contig=<ID={k},length={len(v)}>" for k, v in contigs.items()),
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    (folder / "variants.vcf").write_text("\n".join(header + [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t." for c, p, i, r, a in rows])
                                         + "\n")
    return str(fasta), pysam.tabix_index(str(folder / "variants.vcf"), preset="vcf", force=True)


def _plain_embed(model_dir: Path, sequences: list[str], batch_size: int) -> float:
    """Seconds for the same embeddings in one process, no Ray (the reference the pipeline is compared with)."""
    import numpy as np
    import torch

    from raycad.interpret.embedding import embed_ids
    from raycad.model import CaduceusTokenizer
    from raycad.train.checkpoint import load_exported

    model, _ = load_exported(model_dir)
    tokenizer = CaduceusTokenizer()
    start = time.perf_counter()
    for i in range(0, len(sequences), batch_size):
        ids = torch.from_numpy(tokenizer.encode_batch(sequences[i:i + batch_size], WIDTH).input_ids.astype(np.int64))
        embed_ids(model, ids)
    return time.perf_counter() - start


def bench(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    import torch

    from raycad.interpret import embed, explain, score_variants
    from raycad.runtime import init_ray

    init_ray(num_cpus=os.cpu_count())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fasta_in = folder / "records.fa"
        records = _demo_sequences(args.embed_records)
        fasta_in.write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(records)))
        reference, vcf = _genome(folder, args.variants)
        for preset in args.presets:
            model_dir = _export(preset, folder)
            row: dict[str, Any] = {"preset": preset, "load": os.getloadavg()[0]}
            ray_s, plain_s = [], []
            for _ in range(args.repeats):  # interleaved: Ray pipeline, then the plain loop, under the same load
                out = embed(model_dir, str(fasta_in), folder / "emb.parquet", batch_size=args.batch_size,
                            actors=args.actors)
                ray_s.append(out["seconds"])
                plain_s.append(_plain_embed(model_dir, records, args.batch_size))
            row["embed_per_s"] = len(records) / min(ray_s)
            row["plain_embed_per_s"] = len(records) / min(plain_s)
            variant_s = []
            for _ in range(args.repeats):
                report = score_variants(model_dir, vcf, reference, folder / "variants.parquet",
                                        batch_size=args.batch_size, actors=args.actors)
                variant_s.append(report.seconds)
                row["scored"] = report.scored
            row["variants_per_s"] = row["scored"] / min(variant_s)
            if preset in args.explain_presets:
                report = explain(model_dir, str(fasta_in), folder / "explain", max_records=1, actors=args.actors)
                row["explain_s"] = report.seconds
            row["load"] = max(row["load"], os.getloadavg()[0])
            results.append(row)
            print(row, flush=True)
    threads = torch.get_num_threads()
    lines = [
        "### Embeddings and variant scores on CPU",
        "",
        (f"_torch {torch.__version__}, {threads} torch threads in the driver; random-init models (cost does not "
         f"depend on the weights), max_length {WIDTH}, batch {args.batch_size}, {args.actors} model actor(s), best "
         f"of {args.repeats}; load avg = the 1-minute load average before/after (max)._"),
        "",
        (f"Embeddings: {len(records)} bundled demo records (251 bp). Variants: {results[0]['scored'] if results else 0} "
        "alleles (80% SNVs, 10% insertions, 10% deletions) on two contigs of real demo sequence. `plain` = the "
        "same `embed_ids` calls in one process without Ray. Explain = one 251-bp record, all 753 substitutions "
        "+ gradient x input, both strands, with the PNG."),
        "",
        ("| preset | embeddings/s (raycad embed) | embeddings/s (plain loop) | variants/s (score-variants) | "
        "explain s/record | load avg |"),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        explain_s = f"{r['explain_s']:.1f}" if "explain_s" in r else "-"
        lines.append(f"| {r['preset']} | **{r['embed_per_s']:.1f}** | {r['plain_embed_per_s']:.1f} | "
                     f"**{r['variants_per_s']:.1f}** | {explain_s} | {r['load']:.1f} |")
    return results, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["caduceus-ph-1k-d64-l2", "caduceus-ps-1k-d256-l4"])
    parser.add_argument("--explain-presets", nargs="*", default=["caduceus-ph-1k-d64-l2"])
    parser.add_argument("--embed-records", type=int, default=512)
    parser.add_argument("--variants", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--actors", type=int, default=1,
                        help="model actors (default 1: on 2 cores one actor gets both torch threads, like the plain loop)")
    return run_benchmarks(parser, {"interpret": bench}, "bench/interpret.py", SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
