"""The Ray side of a read: the `SequenceDatasource` whose read tasks stream groups of files
(`dataset_from_plan`), and `clean_dataset` for records that do not come from files (the bundled demo,
HealthOmics read sets)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from raycad.data.records import SEQUENCE_SCHEMA, RawRecords, clean
from raycad.data.sources.options import ReadOptions, SourceFile, SourcePlan
from raycad.data.sources.readers import read_source_file
from raycad.data.sources.skips import SkipCounter, _Tally

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    import ray.data


@functools.cache
def _datasource_class() -> type:
    """`SequenceDatasource`, defined on first use so that importing this module does not import Ray."""
    from ray.data import Datasource

    class SequenceDatasource(Datasource):
        """Reads a `SourcePlan`: files grouped into read tasks by size, each task streaming its files."""

        def __init__(self, plan: SourcePlan, skips: SkipCounter | None) -> None:
            super().__init__()
            self.plan, self.skips = plan, skips

        def get_name(self) -> str:
            return "Sequences"

        def estimate_inmemory_data_size(self) -> int | None:
            sizes = [(f.size or 0) * (4 if f.path.endswith(".gz") or f.format in ("parquet", "bam") else 1)
                     for f in self.plan.files]
            return sum(sizes) or None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            from ray.data.block import BlockMetadata
            from ray.data.datasource import ReadTask

            groups = _balance(self.plan.files, max(1, min(parallelism, len(self.plan.files))))
            fs, opts, skips = self.plan.filesystem, self.plan.options, self.skips
            tasks = []
            for group in groups:
                meta = BlockMetadata(num_rows=None, size_bytes=sum(f.size or 0 for f in group) or None,
                                     input_files=[f.display for f in group], exec_stats=None)
                tasks.append(ReadTask(lambda group=group: _read_group(fs, group, opts, skips), meta,
                                      schema=SEQUENCE_SCHEMA, per_task_row_limit=per_task_row_limit))
            return tasks

    return SequenceDatasource


def _balance(files: list[SourceFile], n_groups: int) -> list[list[SourceFile]]:
    """Split files into at most ``n_groups`` runs of consecutive files of similar total size.

    Runs keep the files' order, so reading the tasks in order (``preserve_order``) reads the records in
    input order: what `raycad.infer.predict` relies on for its row numbers.
    """
    sizes = [f.size or 1 for f in files]
    total, groups, current, done = sum(sizes), [], [], 0
    for i, (f, size) in enumerate(zip(files, sizes)):
        current.append(f)
        done += size
        left_files, left_groups = len(files) - i - 1, n_groups - len(groups) - 1
        if left_groups > 0 and left_files >= left_groups and (done >= total * (len(groups) + 1) / n_groups
                                                              or left_files == left_groups):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _read_group(fs: pafs.FileSystem, files: Iterable[SourceFile], opts: ReadOptions,
                skips: SkipCounter | None) -> Iterator[pa.Table]:
    for src in files:
        yield from read_source_file(fs, src, opts, skips)


def dataset_from_plan(plan: SourcePlan, *, skips: SkipCounter | None = None,
                      override_num_blocks: int | None = None) -> ray.data.Dataset:
    """The lazy Ray Dataset that reads a `SourcePlan` (see `read_sequences`)."""
    import ray.data

    from raycad.runtime import init_ray

    init_ray()
    ds = ray.data.read_datasource(_datasource_class()(plan, skips), override_num_blocks=override_num_blocks)
    if plan.options.limit is not None:
        ds = ds.limit(plan.options.limit)
    return ds


def clean_dataset(ds: ray.data.Dataset, source: str, opts: ReadOptions,
                  skips: SkipCounter | None = None) -> ray.data.Dataset:
    """``ds`` (``sequence``, ``label`` and ``id`` columns, any types) cleaned by the same record contract as
    files (`raycad.data.records.clean`): one error, or with ``bad_records="skip"`` counts in ``skips``."""
    return ds.map_batches(clean_block, batch_format="pyarrow", batch_size=None,
                          fn_kwargs={"source": source, "opts": opts, "skips": skips})


def clean_block(block: pa.Table, *, source: str, opts: ReadOptions, skips: SkipCounter | None) -> pa.Table:
    """One block of `clean_dataset`; its skips are counted under the id of its first record."""
    ids = block.column("id")
    labels = block.column("label") if "label" in block.column_names else None
    part = str(ids[0].as_py()) if len(ids) else ""
    tally = _Tally(source, opts.bad_records, skips, part=part)
    raw = RawRecords(block.column("sequence").combine_chunks(), labels, ids.combine_chunks(), source)
    try:
        return clean(raw, opts, tally.bad, tally.rna_records)
    finally:
        tally.flush()


def read_bundled_demo(path: Any, split: str, opts: ReadOptions,
                      skips: SkipCounter | None = None) -> ray.data.Dataset:
    """One split (its ``split`` column) of the bundled demo table at ``path``, cleaned like any source."""
    import ray.data
    from ray.data.expressions import col

    from raycad.runtime import init_ray

    init_ray()
    demo = ray.data.read_parquet(str(path)).select_columns(["id", "sequence", "label", "split"])
    ds = demo.filter(expr=col("split") == split).drop_columns(["split"])
    return clean_dataset(ds, f"bundled:{path.name} [{split}]", opts, skips)
