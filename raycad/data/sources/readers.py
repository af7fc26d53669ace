"""Reading one planned file into clean ``{sequence, label, id}`` tables (inside Ray read tasks): a reader per
format (CSV/TSV, Parquet, FASTA/FASTQ, BAM/CRAM) yields `RawRecords` chunks, and the record contract
(`raycad.data.records.clean`) normalises and labels each, raising on or counting each bad record."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from raycad.data.fastx import FastxError, read_fastx
from raycad.data.records import RawRecords, clean
from raycad.data.sources.options import (
    CHUNK_BASES,
    CHUNK_ROWS,
    ReadOptions,
    SourceError,
    SourceFile,
    _s3_error,
    _table_columns,
)
from raycad.data.sources.skips import SkipCounter, _Tally

if TYPE_CHECKING:
    import pyarrow.fs as pafs


def read_source_file(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions,
                     skips: SkipCounter | None = None) -> Iterator[pa.Table]:
    """Clean, labelled tables of at most `CHUNK_ROWS` records from one file (used by read tasks)."""
    tally = _Tally(src.display, opts.bad_records, skips)
    reader = {"csv": _read_csv, "tsv": _read_csv, "parquet": _read_parquet, "fasta": _read_fastx,
              "fastq": _read_fastx, "bam": _read_bam}[src.format]
    remaining = opts.limit
    try:
        for chunk in reader(fs, src, opts, tally):
            table = clean(chunk, opts, tally.bad, tally.rna_records)
            tally.flush()
            if remaining is not None:
                table = table.slice(0, remaining)
                remaining -= table.num_rows
            if table.num_rows:
                yield table
            if remaining == 0:
                return
    except FileNotFoundError:
        raise SourceError(f"{src.display}: file disappeared before it could be read", "missing_file") from None
    except OSError as err:
        if src.display.startswith("s3://"):
            raise _s3_error(err, src.display) from None
        raise SourceError(f"{src.display}: cannot read: {err}", "unreadable_file") from None
    finally:
        tally.flush()
        tally.log_summary()


def _id_array(src: SourceFile, start: int, n: int) -> pa.Array:
    return pa.array([f"{src.relative}:{i}" for i in range(start, start + n)], pa.string())


def _read_csv(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[RawRecords]:
    import pyarrow.csv as pacsv

    delimiter = "\t" if src.format == "tsv" else ","

    first_bad: list[str] = []

    def bad_row(row: Any) -> str:
        where = f"line {row.number}" if row.number is not None else "a row"
        message = (f"{src.display}: {where}: malformed row: {row.actual_columns} columns instead of "
                   f"{row.expected_columns}: {row.text[:80]!r}")
        if opts.bad_records == "error":  # raising inside pyarrow's callback would be lost: fail, then explain
            first_bad.append(message)
            return "error"
        tally.bad("malformed_record", message)
        return "skip"

    with fs.open_input_stream(src.path, compression="detect") as stream:
        probe = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=lambda row: "skip")
        header = pacsv.open_csv(stream, parse_options=probe,
                                read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    seq_col, label_col, id_col = _table_columns(header, src, opts)
    columns = [c for c in (seq_col, label_col, id_col) if c is not None]
    convert = pacsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=True, quoted_strings_can_be_null=False)
    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=bad_row)
    with fs.open_input_stream(src.path, compression="detect") as stream:
        try:
            reader = pacsv.open_csv(stream, parse_options=parse, convert_options=convert,
                                    read_options=pacsv.ReadOptions(block_size=4 << 20))
            record = 1
            for batch in reader:
                for start in range(0, batch.num_rows, CHUNK_ROWS):
                    part = batch.slice(start, CHUNK_ROWS)
                    yield _table_chunk(part, seq_col, label_col, id_col, src, record)
                    record += part.num_rows
        except pa.ArrowInvalid as err:
            if first_bad:
                raise SourceError(first_bad[0], "malformed_record") from None
            raise SourceError(f"{src.display}: malformed {src.format.upper()}: {err}", "malformed_record") from None


def _read_parquet(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[RawRecords]:
    import pyarrow.parquet as pq

    with fs.open_input_file(src.path) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowInvalid as err:
            raise SourceError(f"{src.display}: not a readable parquet file: {err}", "unreadable_file") from None
        seq_col, label_col, id_col = _table_columns(parquet.schema_arrow.names, src, opts)
        columns = [c for c in (seq_col, label_col, id_col) if c is not None]
        record = 1
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            yield _table_chunk(batch, seq_col, label_col, id_col, src, record)
            record += batch.num_rows


def _table_chunk(batch: pa.RecordBatch, seq_col: str, label_col: str | None, id_col: str | None,
                 src: SourceFile, record: int) -> RawRecords:
    ids = batch.column(id_col).cast(pa.string()) if id_col else _id_array(src, record, batch.num_rows)
    if id_col and ids.null_count:
        ids = pc.if_else(pc.is_null(ids), _id_array(src, record, batch.num_rows), ids)
    labels = batch.column(label_col) if label_col else None
    return RawRecords(batch.column(seq_col), labels, ids, src.display, record, src.file_label)


_HEADER_LABEL_CACHE: dict[str, re.Pattern] = {}


def _header_label(key: str) -> re.Pattern:
    if key not in _HEADER_LABEL_CACHE:
        _HEADER_LABEL_CACHE[key] = re.compile(rf"(?:^|[\s;|,]){re.escape(key)}=([^\s;|,]+)")
    return _HEADER_LABEL_CACHE[key]


def _read_fastx(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[RawRecords]:
    use_header = opts.label_from in ("auto", "header")
    use_manifest = opts.label_from in ("auto", "manifest") and opts.record_labels is not None
    if opts.label_from in ("column", "tag"):
        raise SourceError(f"{src.display}: label_from={opts.label_from!r} does not apply to "
                          f"{src.format.upper()} files (use header, file or manifest)", "bad_option")
    pattern = _header_label(opts.header_label_key)

    def on_error(err: FastxError) -> None:
        tally.bad(_fastx_reason(err), str(err))  # the message keeps fastx's own detail

    seqs: list[str] = []
    labels: list[str | None] = []
    ids: list[str] = []
    first, n_bases = 1, 0
    with fs.open_input_stream(src.path, compression=None) as stream:
        try:
            records = read_fastx(stream, format=src.format, name=src.display,
                                 on_error=on_error if opts.bad_records == "skip" else None)
            for number, rec in enumerate(records, 1):
                label = None
                if use_header:
                    match = pattern.search(f"{rec.id} {rec.description}")
                    label = match.group(1) if match else None
                if label is None and use_manifest:
                    label = opts.record_labels.get(rec.id)  # type: ignore[union-attr]
                seqs.append(rec.sequence)
                labels.append(label)
                ids.append(rec.id)
                n_bases += len(rec.sequence)
                if len(seqs) >= CHUNK_ROWS or n_bases >= CHUNK_BASES:
                    yield _record_chunk(src, seqs, labels, ids, first)
                    first = number + 1
                    seqs, labels, ids, n_bases = [], [], [], 0
        except FastxError as err:
            raise SourceError(str(err), _fastx_reason(err)) from None
    if seqs:
        yield _record_chunk(src, seqs, labels, ids, first)


def _fastx_reason(err: FastxError) -> str:
    """A record the parser rejects is malformed; a stream it cannot read (a cut gzip) is an unreadable file."""
    return "malformed_record" if err.record is not None else "unreadable_file"


def _record_chunk(src: SourceFile, seqs: list[str], labels: list, ids: list[str], first: int) -> RawRecords:
    return RawRecords(pa.array(seqs, pa.string()),
                      pa.array([None if v is None else str(v) for v in labels], pa.string()),
                      pa.array(ids, pa.string()), src.display, first, src.file_label)


def _read_bam(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[RawRecords]:
    import pysam

    if opts.label_from in ("column", "header"):
        raise SourceError(f"{src.display}: label_from={opts.label_from!r} does not apply to BAM/CRAM files "
                          f"(use tag, file or manifest)", "bad_option")
    lower = src.path.lower()
    mode = "rc" if lower.endswith(".cram") else "r" if lower.endswith(".sam") else "rb"
    use_tag = opts.label_from in ("auto", "tag")
    use_manifest = opts.label_from in ("auto", "manifest") and opts.record_labels is not None
    with _local_copy(fs, src) as local:
        try:
            bam = pysam.AlignmentFile(local, mode, check_sq=False, reference_filename=opts.cram_reference)
        except (ValueError, OSError) as err:
            raise SourceError(f"{src.display}: cannot open as {'CRAM' if mode == 'rc' else 'BAM/SAM'}: {err}",
                              "unreadable_file") from None
        with bam:
            group_fields = {rg.get("ID"): rg for rg in bam.header.to_dict().get("RG", [])}
            seqs: list[str] = []
            labels: list = []
            ids: list[str] = []
            first = number = 0
            try:
                for read in bam.fetch(until_eof=True):
                    if read.is_secondary or read.is_supplementary:
                        tally.bad("secondary_alignment",
                                  f"{src.display}: {read.query_name}: secondary or supplementary alignment of "
                                  f"a read already counted", always_skip=True)
                        continue
                    number += 1
                    first = first or number
                    label = None
                    if use_tag:
                        label = _bam_tag_label(read, opts.label_tag, group_fields)
                    if label is None and use_manifest:
                        label = opts.record_labels.get(read.query_name)  # type: ignore[union-attr]
                    mate = "/1" if read.is_paired and read.is_read1 else "/2" if read.is_paired else ""
                    seqs.append(read.get_forward_sequence() or "")
                    labels.append(label)
                    ids.append(f"{read.query_name}{mate}")
                    if len(seqs) >= CHUNK_ROWS:
                        yield _record_chunk(src, seqs, labels, ids, first)
                        seqs, labels, ids, first = [], [], [], 0
            except (OSError, ValueError) as err:
                raise SourceError(f"{src.display}: after record {number}: truncated or corrupt file: {err}",
                                  "unreadable_file") from None
            if seqs:
                yield _record_chunk(src, seqs, labels, ids, first)


class _local_copy:
    """A local path for ``src``: the file itself, or a temporary copy of a remote object (pysam needs paths)."""

    def __init__(self, fs: pafs.FileSystem, src: SourceFile) -> None:
        self.fs, self.src, self._tmp = fs, src, None

    def __enter__(self) -> str:
        import pyarrow.fs as pafs

        if isinstance(self.fs, pafs.LocalFileSystem):
            return self.src.path
        suffix = "".join(PurePosixPath(self.src.path).suffixes[-1:])
        self._tmp = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
        with self._tmp as out, self.fs.open_input_stream(self.src.path, compression=None) as stream:
            while chunk := stream.read(8 << 20):
                out.write(chunk)
        return self._tmp.name

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            os.unlink(self._tmp.name)


def _bam_tag_label(read: Any, tag: str, groups: dict[str, dict]) -> str | None:
    """A read's own tag, else the same field of its read group's @RG header line (e.g. LB, SM)."""
    if read.has_tag(tag):
        return str(read.get_tag(tag))
    if read.has_tag("RG"):
        value = groups.get(read.get_tag("RG"), {}).get(tag)
        return None if value is None else str(value)
    return None
