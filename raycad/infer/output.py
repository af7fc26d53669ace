"""Streaming output of per-record results: one Parquet or CSV/TSV file, written batch by batch.

`TableWriter` appends Arrow tables to ``path`` (local or ``s3://``), numbering rows as they arrive
(``row``: 0-based position in the input), so memory stays at one batch whatever the input size. The format
follows the extension: ``.parquet`` / ``.pq``, ``.csv``, ``.tsv`` (each optionally ``.gz``). Columns whose
values are arrays (embeddings) are supported by Parquet only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}


def output_format(path: str | os.PathLike) -> str:
    """"parquet", "csv" or "tsv" from the file name; anything else is an error naming the path."""
    name = str(path).lower().removesuffix(".gz")
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    raise ValueError(f"output {path}: unknown format (use a .parquet, .csv or .tsv file name)")


class TableWriter:
    """Append-only writer of one output table; use as a context manager. ``rows`` counts what was written."""

    def __init__(self, path: str | os.PathLike, *, row_column: str | None = "row",
                 s3_endpoint: str | None = None, s3_region: str | None = None) -> None:
        self.path = str(path)
        self.format = output_format(self.path)
        self.row_column = row_column
        self.rows = 0
        from raycad.storage import filesystem, is_s3

        self._fs, inside, _ = filesystem(self.path, s3_endpoint, s3_region)
        self._target: str | Path = inside if is_s3(self.path) else Path(inside)
        self._stream: Any = None
        self._writer: Any = None

    def __enter__(self) -> TableWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, table: pa.Table) -> None:
        if self.row_column is not None:
            table = table.add_column(0, self.row_column, pa.array(range(self.rows, self.rows + table.num_rows),
                                                                  pa.int64()))
        if self._writer is None:
            self._open(table.schema)
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _open(self, schema: pa.Schema) -> None:
        if isinstance(self._target, Path):
            self._target.parent.mkdir(parents=True, exist_ok=True)
            target = str(self._target)
        else:
            target = self._target
        gz = self.path.lower().endswith(".gz")
        self._stream = self._fs.open_output_stream(target, compression="gzip" if gz else None)
        if self.format == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._stream, schema)
        else:
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(self._stream, schema, write_options=pacsv.WriteOptions(
                delimiter="\t" if self.format == "tsv" else ","))

    def close(self) -> None:
        if self._writer is None and self._stream is None:
            return
        if self._writer is not None:
            self._writer.close()
        if self._stream is not None:
            self._stream.close()
        self._writer = self._stream = None


def empty_output(path: str | os.PathLike, schema: pa.Schema, **kwargs: Any) -> None:
    """Write a file with ``schema`` and no rows (an input with no records still gets its output file)."""
    with TableWriter(path, **kwargs) as writer:
        writer.write(schema.empty_table())
