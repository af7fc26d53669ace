"""Labelled DNA sequences from files, directories, globs, S3 or the Hugging Face hub, as one Ray Dataset.

`read_sequences(uri, options)` turns any supported source into a lazy `ray.data.Dataset` with the schema
``{sequence: string, label: int64, id: string}``: CSV / TSV (optionally gzipped) and Parquet tables;
FASTA / FASTQ, plain or gzip, labelled by a ``label=...`` header field, by the file (its parent folder in
the Genomic Benchmarks layout ``<dir>/<split>/<class>/*.fa``, else its stem) or by a manifest; BAM / uBAM /
SAM / CRAM through pysam, labelled by a read or read-group tag or a manifest; Hugging Face datasets (a
local copy in the hub's parquet layout, or ``hf://owner/name``); ``healthomics://`` read sets.

One `ReadOptions` object says how (`read_options` builds it from a config). The read is planned on the
driver (`planning`: a missing file, bucket or key and wrong credentials fail at once; `preflight` looks at
the start of each file), then records are
read inside Ray read tasks (`datasource`, `readers`). Every record, from a file, a HealthOmics read set or
the bundled demo (`clean_dataset`), is cleaned once by the record contract (`raycad.data.records.clean`);
a bad record raises `SourceError` naming the file, the record and the problem, or with
``bad_records="skip"`` is dropped and counted per source and reason (`raycad.data.records.REASONS`) in a
`SkipCounter`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from raycad.data.records import SEQUENCE_SCHEMA
from raycad.data.sources.datasource import clean_dataset, dataset_from_plan, read_bundled_demo
from raycad.data.sources.options import (
    CHUNK_BASES,
    CHUNK_ROWS,
    OPTION_NAMES,
    SPLIT_ALIASES,
    BadRecords,
    Format,
    InvalidChars,
    LabelFrom,
    ReadOptions,
    SourceError,
    SourceFile,
    SourcePlan,
    read_options,
)
from raycad.data.sources.planning import PREFLIGHT_FILES, plan_sources, preflight
from raycad.data.sources.readers import read_source_file
from raycad.data.sources.skips import SkipCounter, SkipReport

if TYPE_CHECKING:
    import ray.data

    from raycad.config import StorageSection

__all__ = [
    "CHUNK_BASES", "CHUNK_ROWS", "OPTION_NAMES", "PREFLIGHT_FILES", "SEQUENCE_SCHEMA", "SPLIT_ALIASES",
    "BadRecords", "Format", "InvalidChars", "LabelFrom", "ReadOptions", "SkipCounter", "SkipReport",
    "SourceError", "SourceFile", "SourcePlan", "clean_dataset", "dataset_from_plan", "plan_sources", "preflight",
    "read_bundled_demo", "read_options", "read_sequences", "read_source_file",
]


def read_sequences(uri: str | os.PathLike | Sequence[str | os.PathLike], options: Any = None, *,
                   split: str | None = None, storage: StorageSection | None = None,
                   skips: SkipCounter | None = None, override_num_blocks: int | None = None,
                   **overrides: Any) -> ray.data.Dataset:
    """Labelled sequences from ``uri`` as a lazy Ray Dataset ``{sequence: string, label: int64, id: string}``.

    Args:
        uri: a local file, directory or glob; ``s3://bucket/key`` (file, prefix or glob); a Hugging Face
            dataset (``hf://owner/name``, ``owner/name``, or a local copy in the hub's parquet layout); a
            ``healthomics://`` read-set URI (see `raycad.data.healthomics`); or a list of local/S3 URIs.
        options: a `ReadOptions`, or a config's data section (its fields of the same names); ``storage``
            (the config's `StorageSection`) and keyword ``overrides`` (`ReadOptions` fields) are applied on
            top by `read_options`.
        split: "train" / "validation" / "test": picks that split in a directory laid out by split
            (``<dir>/<split>/...``, ``<dir>/data/<split>-*.parquet``); ignored for single files and globs.
        skips: a `SkipCounter` that receives the counts of skipped records (per file and reason).
        override_num_blocks: number of read tasks (default: Ray's choice, at most one per file).

    The files are listed now; records are read when the dataset executes, inside Ray tasks, and under
    ``bad_records="error"`` a bad record makes that execution raise `SourceError`.
    """
    opts = read_options(options, storage, **overrides)
    if isinstance(uri, str) and uri.startswith("healthomics://"):
        return _read_healthomics(uri, opts, skips)
    return dataset_from_plan(plan_sources(uri, opts, split=split), skips=skips,
                             override_num_blocks=override_num_blocks)


def _read_healthomics(uri: str, opts: ReadOptions, skips: SkipCounter | None) -> ray.data.Dataset:
    from raycad.data.healthomics.datasource import read_healthomics

    ds = read_healthomics(uri, class_names=list(opts.class_names) if opts.class_names else None,
                          region=opts.s3_region, label_policy="none" if opts.label_from == "none" else None)
    ds = clean_dataset(ds, uri, opts, skips)
    return ds.limit(opts.limit) if opts.limit else ds
