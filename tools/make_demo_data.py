"""Build raycad's bundled demo data from the published Genomic Benchmarks human_nontata_promoters TEST split.

Reads ``../shared/data/human_nontata_promoters.test.csv.gz`` (9,034 sequences of 251 bp, columns
``sequence,label``, sorted by label), splits it 80/10/10 into train/validation/test, stratified by label with a
fixed seed, shuffles the rows (so that the first N rows of a split hold both classes, e.g. under
``data.limit``) and writes ``raycad/data/bundled/human_nontata_promoters.parquet`` (zstd) with columns ``id`` (the row
number in the source file), ``sequence``, ``label`` and ``split``. Running it again gives the same file.

    python tools/make_demo_data.py [--source CSV_GZ] [--out PARQUET] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "human_nontata_promoters.test.csv.gz"
OUT = REPO / "raycad" / "data" / "bundled" / "human_nontata_promoters.parquet"
FRACTIONS = {"validation": 0.1, "test": 0.1}  # the rest is train


def stratified_split(labels: np.ndarray, seed: int) -> np.ndarray:
    """A split name per row: in each class a seeded permutation gives 10% validation, 10% test, 80% train."""
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype=object)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, fraction in FRACTIONS.items():
            count = round(fraction * len(rows))
            split[rows[start:start + count]] = name
            start += count
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    frame = pd.read_csv(args.source, dtype={"sequence": str, "label": np.int8})
    if list(frame.columns) != ["sequence", "label"]:
        raise SystemExit(f"{args.source}: expected columns sequence,label, got {list(frame.columns)}")
    table = pa.table({
        "id": pa.array([f"nontata_test_{i}" for i in range(len(frame))], pa.string()),
        "sequence": pa.array(frame["sequence"].tolist(), pa.string()),
        "label": pa.array(frame["label"].to_numpy(), pa.int8()),
        "split": pa.array(stratified_split(frame["label"].to_numpy(), args.seed), pa.string()).dictionary_encode(),
    })
    meta = {b"source": b"Genomic Benchmarks human_nontata_promoters, published TEST split (Gresova et al. 2023, "
                       b"Apache-2.0), re-split 80/10/10 stratified", b"seed": str(args.seed).encode()}
    table = table.take(np.random.default_rng(args.seed).permutation(len(frame)))
    table = table.replace_schema_metadata(meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out, compression="zstd", compression_level=19)
    counts = pd.crosstab(table["split"].to_pandas(), table["label"].to_pandas())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)\n{counts}")


if __name__ == "__main__":
    main()
