"""Labelled DNA sequences from files, directories, globs, S3 or the Hugging Face hub, as one Ray Dataset.

`read_sequences` turns any supported source into a lazy `ray.data.Dataset` with the schema
``{sequence: string, label: int64, id: string}``:

* tables: CSV, TSV (optionally gzipped) and Parquet, with configurable sequence / label / id columns and
  string labels mapped through ``class_names``;
* FASTA / FASTQ, plain or gzip, labelled by a ``label=...`` header field, by the file (the class is the
  parent directory in the Genomic Benchmarks layout ``<dir>/<split>/<class>/*.fa``, else the file stem,
  e.g. ``positive.fasta``), or by a manifest;
* BAM / uBAM / SAM / CRAM through pysam (unaligned reads included), labelled by a read or read-group tag
  (``LB``, ``RG``, ...) or by a manifest;
* Hugging Face datasets: a local copy in the hub's parquet layout (``<dir>/data/train-*.parquet`` or
  ``<dir>/<split>/*.parquet``), or a hub id (``hf://owner/name`` or ``owner/name``) fetched with
  ``huggingface_hub.snapshot_download`` when that package is installed and the hub is reachable.

URIs are local paths, globs and ``s3://bucket/key`` (prefixes and globs too), read through pyarrow's
filesystems; ``s3_endpoint`` points at any S3-compatible store and credentials come from the usual AWS chain
(they are never logged). Files are listed on the driver, which makes a missing file, bucket or key and
wrong credentials fail at once with a clear message; the records themselves are read inside Ray read tasks,
one or more files per task, in parallel.

Every record is cleaned the same way whatever its format: whitespace removed, upper-cased, characters
outside ACGTN kept for the tokenizer's [UNK] (``invalid_chars="unk"``), replaced by N (``"n"``) or the
record rejected (``"reject"``). A bad record (empty sequence, rejected characters, missing or unknown
label, label id out of range, malformed FASTQ, ...) raises `SourceError` naming the file, the record and
the problem; with ``bad_records="skip"`` it is dropped and counted instead, per file and reason, in a
`SkipCounter` (a small Ray actor that read tasks report to) whose `SkipReport` the caller prints at the end.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raycad.data.fastx import FastxError, read_fastx
from raycad.data.fastx import detect_format as detect_fastx_format
from raycad.data.records import RecordError
from raycad.runtime import get_logger

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    import ray.data

    from raycad.config import DataSection, StorageSection

log = get_logger(__name__)

SEQUENCE_SCHEMA = pa.schema([("sequence", pa.string()), ("label", pa.int64()), ("id", pa.string())])
"""The schema of every dataset `read_sequences` returns."""

Format = Literal["auto", "csv", "tsv", "parquet", "fasta", "fastq", "bam", "hf"]
LabelFrom = Literal["auto", "file", "header", "manifest", "column", "tag", "none"]
InvalidChars = Literal["unk", "n", "reject"]
BadRecords = Literal["error", "skip"]

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
_SPLIT_NAMES = {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}
_HF_SPLIT_FILE = re.compile(r"^(train|training|validation|valid|val|dev|test|testing)[-_.]")
_SEQUENCE_ALIASES = ("sequence", "seq", "sequences", "dna")
_ID_ALIASES = ("id", "name", "record_id", "read_id")
_GLOB_CHARS = set("*?[")
CHUNK_ROWS = 8192
"""Records per block a read task emits (fewer when the sequences are long: see `CHUNK_BASES`)."""
CHUNK_BASES = 16 << 20


class SourceError(RecordError):
    """Unreadable or invalid input; the message names the file (or bucket), the record and the problem."""


# ================================================================================================================
# Skipped-record accounting across Ray tasks
# ================================================================================================================


@dataclass
class SkipReport:
    """Records dropped while reading: counts per source file and reason, and a few example messages."""

    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def by_reason(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counts in self.by_source.values():
            for reason, n in counts.items():
                totals[reason] = totals.get(reason, 0) + n
        return dict(sorted(totals.items()))

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def merge(self, other: SkipReport) -> SkipReport:
        return SkipReport({**self.by_source, **other.by_source}, (self.examples + other.examples)[:20])

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": self.by_reason, "by_source": self.by_source,
                "examples": self.examples}

    def __str__(self) -> str:
        if not self.total:
            return "no records skipped"
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason.items())
        return f"{self.total} records skipped ({reasons})"


class _SkipCounterActor:
    """Holds the latest cumulative counts each read task reported for each source file.

    Counts are *replaced* per file, not added, so a dataset that is executed several times (every epoch
    re-reads a lazy dataset) reports each skipped record once.
    """

    def __init__(self) -> None:
        self._sources: dict[str, tuple[dict[str, int], list[str]]] = {}

    def update(self, source: str, counts: dict[str, int], examples: list[str]) -> None:
        self._sources[source] = (dict(counts), list(examples))

    def snapshot(self) -> dict[str, tuple[dict[str, int], list[str]]]:
        return self._sources


class SkipCounter:
    """Collects skipped-record counts from every Ray read task; pass one to `read_sequences(..., skips=)`.

    It is a thin handle on a named actor (no CPU reserved), so it can be pickled into tasks; `report`
    gathers the counts on the driver. Use one counter per split to report skips per split.
    """

    def __init__(self, name: str | None = None) -> None:
        import ray

        from raycad.runtime import init_ray

        init_ray()
        self.name = name or f"raycad-skips-{uuid.uuid4().hex[:10]}"
        actor_cls = ray.remote(num_cpus=0, max_restarts=0)(_SkipCounterActor)
        self._actor = actor_cls.options(name=self.name, get_if_exists=True).remote()

    def update(self, source: str, counts: dict[str, int], examples: list[str]) -> None:
        import ray

        ray.get(self._actor.update.remote(source, counts, examples))

    def report(self) -> SkipReport:
        import ray

        snapshot = ray.get(self._actor.snapshot.remote())
        examples = [e for _, (_, ex) in sorted(snapshot.items()) for e in ex][:20]
        by_source = {src: counts for src, (counts, _) in sorted(snapshot.items()) if any(counts.values())}
        return SkipReport(by_source, examples)


class _Tally:
    """Per-file skip bookkeeping inside a read task: raise or count, and report counts to the counter."""

    def __init__(self, source: str, policy: BadRecords, counter: SkipCounter | None) -> None:
        self.source, self.policy, self.counter = source, policy, counter
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []
        self._dirty = False

    def bad(self, reason: str, message: str, *, always_skip: bool = False) -> None:
        """A bad record: raise `SourceError` under the "error" policy, else count it."""
        if self.policy == "error" and not always_skip:
            raise SourceError(message, reason)
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < 3:
            self.examples.append(message)
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            if self.counter is not None:
                self.counter.update(self.source, self.counts, self.examples)

    def log_summary(self) -> None:
        if self.counts:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            log.warning("%s: skipped %d records (%s)", self.source, sum(self.counts.values()), detail)


# ================================================================================================================
# Options and the plan of what to read
# ================================================================================================================


@dataclass(frozen=True)
class ReadOptions:
    """Everything a read task needs to turn one file into rows (picklable, built once on the driver)."""

    format: Format = "auto"
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str = "id"
    class_names: tuple[str, ...] | None = None
    label_from: LabelFrom = "auto"
    header_label_key: str = "label"
    label_tag: str = "LB"
    invalid_chars: InvalidChars = "unk"
    bad_records: BadRecords = "error"
    limit: int | None = None
    cram_reference: str | None = None
    record_labels: dict[str, str] | None = None
    """Labels by record id, from a manifest."""


@dataclass(frozen=True)
class SourceFile:
    """One file to read: its filesystem path, how it is shown to users, its format and file-level label."""

    path: str
    display: str
    format: str
    size: int | None = None
    relative: str = ""
    layout_class: str | None = None
    """Class name implied by the file's place: parent directory under the split root, else the file stem."""
    file_label: str | None = None
    """Label for every record of the file (from the layout or a path manifest), if any."""


@dataclass
class SourcePlan:
    """The files `read_sequences` will read, resolved on the driver, and the class names in id order."""

    files: list[SourceFile]
    class_names: list[str] | None
    options: ReadOptions
    filesystem: Any = None
    uris: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None


def plan_sources(uri: str | os.PathLike | Sequence[str | os.PathLike], *, split: str | None = None,
                 format: Format = "auto", sequence_column: str = "sequence", label_column: str = "label",
                 id_column: str = "id", class_names: Sequence[str] | None = None, label_from: LabelFrom = "auto",
                 manifest: str | None = None, header_label_key: str = "label", label_tag: str = "LB",
                 invalid_chars: InvalidChars = "unk", bad_records: BadRecords = "error",
                 limit: int | None = None, s3_endpoint: str | None = None, s3_region: str | None = None,
                 cram_reference: str | None = None) -> SourcePlan:
    """Resolve ``uri`` to files and class names on the driver, without reading any record.

    Raises `SourceError` at once for a missing path, bucket or key, denied credentials, an empty match, a
    directory with several splits but no ``split`` chosen, or a manifest that cannot be used.
    """
    _check_choice("format", format, Format)
    _check_choice("label_from", label_from, LabelFrom)
    _check_choice("invalid_chars", invalid_chars, InvalidChars)
    _check_choice("bad_records", bad_records, BadRecords)
    if split is not None and split not in SPLIT_ALIASES:
        split = _SPLIT_NAMES.get(split, split)
    uris = [os.fspath(u) for u in uri] if isinstance(uri, (list, tuple)) else [os.fspath(uri)]  # type: ignore[arg-type]
    if not uris:
        raise SourceError("no data URI given")
    files: list[SourceFile] = []
    filesystem = None
    for one in uris:
        fs, listed = _list_uri(one, split=split, format=format, s3_endpoint=s3_endpoint, s3_region=s3_region)
        if filesystem is not None and type(fs) is not type(filesystem):
            raise SourceError(f"cannot mix local and s3:// URIs in one read: {uris}")
        filesystem = fs
        files.extend(listed)
    opts = ReadOptions(format=format, sequence_column=sequence_column, label_column=label_column,
                       id_column=id_column, class_names=tuple(class_names) if class_names else None,
                       label_from=label_from, header_label_key=header_label_key, label_tag=label_tag,
                       invalid_chars=invalid_chars, bad_records=bad_records, limit=limit,
                       cram_reference=cram_reference)
    if manifest:
        files, opts = _apply_manifest(manifest, files, opts, s3_endpoint=s3_endpoint, s3_region=s3_region)
    elif label_from == "manifest":
        raise SourceError("label_from='manifest' needs a manifest file (data.manifest)")
    files, names = _assign_file_labels(files, opts)
    opts = replace(opts, class_names=tuple(names) if names is not None else None)
    return SourcePlan(files, names, opts, filesystem, uris)


def _check_choice(name: str, value: str, allowed: Any) -> None:
    choices = allowed.__args__
    if value not in choices:
        raise SourceError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _assign_file_labels(files: list[SourceFile], opts: ReadOptions) -> tuple[list[SourceFile], list[str] | None]:
    """Decide which files are labelled by their place in the layout, and infer class names if needed."""
    names = list(opts.class_names) if opts.class_names else None
    if opts.label_from == "file":
        candidates = files
        if not any(f.layout_class for f in files):
            raise SourceError("label_from='file' but no class name can be taken from the file names")
    elif opts.label_from == "auto" and opts.record_labels is None and not any(f.file_label for f in files):
        # Without a manifest: tables carry a label column; for FASTA/FASTQ/BAM the layout labels records that
        # have no label of their own, but only when it says something: several classes, or declared names.
        candidates = [f for f in files if f.format not in ("csv", "tsv", "parquet")]
        layout = {f.layout_class for f in candidates if f.layout_class}
        if not (len(layout) >= 2 or (names is not None and layout and layout <= set(names))):
            candidates = []
    else:
        candidates = []
    chosen = {id(f) for f in candidates}
    files = [replace(f, file_label=f.layout_class) if id(f) in chosen and f.file_label is None else f
             for f in files]
    if names is None:
        labels = sorted({f.file_label for f in files if f.file_label is not None})
        if labels and not all(label.isdigit() for label in labels):
            names = labels
            log.info("class names from the file layout / manifest: %s",
                     ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return files, names


# ================================================================================================================
# Filesystems and listing
# ================================================================================================================


def _filesystem(uri: str, s3_endpoint: str | None, s3_region: str | None) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, prefix to show users) for a local path or an s3:// URI."""
    from raycad.storage import StorageError, filesystem

    try:
        return filesystem(uri, s3_endpoint, s3_region)
    except StorageError as err:
        raise SourceError(str(err)) from None


def _s3_error(err: OSError, display: str) -> SourceError:
    text = str(err)
    if any(code in text for code in ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                                     "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                     "EXPIRED_TOKEN", "ExpiredToken")):
        return SourceError(f"{display}: access denied: the AWS credentials in use (from the environment, "
                           f"profile or instance role) are wrong, expired or lack permission to read it",
                           "access denied")
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return SourceError(f"{display}: the bucket does not exist", "missing bucket")
    return SourceError(f"{display}: cannot read: {text.split(' (Request ID')[0]}", "io error")


def _list_uri(uri: str, *, split: str | None, format: Format, s3_endpoint: str | None,
              s3_region: str | None) -> tuple[pafs.FileSystem, list[SourceFile]]:
    import pyarrow.fs as pafs

    remote = uri.startswith(("s3://", "s3a://"))
    if uri.startswith("hf://") or (not remote and (format == "hf" or _looks_like_hub_id(uri))):
        uri = _hf_local_dir(uri)
        format = "parquet"
    elif format == "hf":  # the hub's parquet layout copied to S3
        format = "parquet"
    fs, path, scheme = _filesystem(uri, s3_endpoint, s3_region)
    display = f"{scheme}{path}" if scheme else path
    try:
        if any(c in path for c in _GLOB_CHARS):
            base = _glob_base(path)
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            matched = [i for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)]
            if not matched:
                _raise_missing(fs, path, display, scheme, what="nothing matches")
            return fs, _describe(matched, base, scheme, format, split=None, explicit=True)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return fs, _describe([info], str(PurePosixPath(path).parent), scheme, format, split=None, explicit=True)
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = [i for i in infos if i.type == pafs.FileType.File]
            return fs, _describe(files, path, scheme, format, split=split, explicit=False)
        _raise_missing(fs, path, display, scheme, what="no such file or directory")
    except SourceError:
        raise
    except OSError as err:
        if scheme:
            raise _s3_error(err, display) from None
        raise SourceError(f"{display}: cannot read: {err}", "io error") from None
    raise AssertionError("unreachable")


def _raise_missing(fs: pafs.FileSystem, path: str, display: str, scheme: str, what: str) -> None:
    import pyarrow.fs as pafs

    if scheme:
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise SourceError(f"{display}: bucket {bucket!r} does not exist (or is not visible with the "
                              f"credentials in use)", "missing bucket")
        raise SourceError(f"{display}: no such key or prefix in bucket {bucket!r}", "missing file")
    raise SourceError(f"{display}: {what}", "missing file")


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in _GLOB_CHARS):
            return "/".join(parts[:i]) or "/"
    return pattern


def _data_format(name: str) -> str | None:
    """The format of a file from its name; None for files that are not sequence data."""
    lower = name.lower().removesuffix(".gz")
    if lower.endswith((".parquet", ".pq")):
        found = "parquet"
    elif lower.endswith(".csv"):
        found = "csv"
    elif lower.endswith((".tsv", ".tab")):
        found = "tsv"
    elif lower.endswith((".bam", ".ubam", ".cram", ".sam")):
        found = "bam"
    else:
        found = detect_fastx_format(lower)
    return found


def _describe(infos: list, root: str, scheme: str, requested: Format, *, split: str | None,
              explicit: bool) -> list[SourceFile]:
    """SourceFiles for listed files: keep data files (and the chosen split), note each file's layout class."""
    entries = []
    for info in sorted(infos, key=lambda i: i.path):
        rel = PurePosixPath(info.path).relative_to(root) if info.path.startswith(root.rstrip("/") + "/") \
            else PurePosixPath(PurePosixPath(info.path).name)
        if not explicit and any(part.startswith((".", "_")) for part in rel.parts):
            continue  # hidden files, _SUCCESS markers, .cache folders of hub snapshots
        found = _data_format(rel.name)
        if explicit and requested != "auto":
            fmt = requested
        elif requested not in ("auto", "hf") and found is not None and found != requested:
            continue
        else:
            fmt = found
        if fmt is None:
            if explicit:
                raise SourceError(f"{scheme}{info.path}: unknown file type; set the format "
                                  f"(csv, tsv, parquet, fasta, fastq, bam)", "unknown format")
            continue
        entries.append((rel, info, fmt))
    if not entries:
        where = f"{scheme}{root}"
        raise SourceError(f"{where}: no sequence files found (csv, tsv, parquet, fasta/fastq[.gz], bam, cram)",
                          "missing file")
    if not explicit:  # a directory: it may be laid out by split
        entries = _select_split(entries, split, f"{scheme}{root}")
    return [SourceFile(path=info.path, display=f"{scheme}{info.path}", format=fmt, size=info.size,
                       relative=str(rel), layout_class=_layout_class(rel))
            for rel, info, fmt in entries]


def _split_of(rel: PurePosixPath) -> tuple[str | None, PurePosixPath]:
    """(split name, path below the split folder) from a relative path; (None, rel) outside split layouts."""
    for i, part in enumerate(rel.parts[:-1]):
        if part.lower() in _SPLIT_NAMES:
            return _SPLIT_NAMES[part.lower()], PurePosixPath(*rel.parts[i + 1:])
    match = _HF_SPLIT_FILE.match(rel.name.lower())
    if match:  # Hugging Face layout: data/train-00000-of-00001.parquet
        return _SPLIT_NAMES[match.group(1)], PurePosixPath(rel.name)
    return None, rel


def _select_split(entries: list, split: str | None, where: str) -> list:
    tagged = [(_split_of(rel), rel, info, fmt) for rel, info, fmt in entries]
    found = sorted({s for (s, _), *_ in tagged if s is not None})
    if not found:
        return entries
    if split is None:
        raise SourceError(f"{where} holds several splits ({', '.join(found)}); choose one (split=...)",
                          "ambiguous split")
    chosen = [(below, info, fmt) for (s, below), rel, info, fmt in tagged if s == split]
    if not chosen:
        raise SourceError(f"{where} has no {split!r} split (found: {', '.join(found)})", "missing split")
    return chosen


_DATA_SUFFIXES = (".fasta", ".fastq", ".fa", ".fq", ".fna", ".fas", ".csv", ".tsv", ".tab", ".parquet", ".pq",
                  ".bam", ".ubam", ".cram", ".sam")


def _layout_class(rel: PurePosixPath) -> str | None:
    """The class a file's place names: its folder below the (split) root, else its stem (``positive.fa.gz``)."""
    if len(rel.parts) >= 2:
        return rel.parts[-2]
    stem = rel.name[:-3] if rel.name.lower().endswith(".gz") else rel.name
    suffix = next((s for s in _DATA_SUFFIXES if stem.lower().endswith(s)), "")
    return stem[: len(stem) - len(suffix)] or None


# ---- Hugging Face ----------------------------------------------------------------------------------------------


def _looks_like_hub_id(uri: str) -> bool:
    """``owner/name`` that is not a local path and does not end like a data file."""
    return (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", uri) is not None and not os.path.exists(uri)
            and _data_format(uri) is None)


def _hf_local_dir(uri: str) -> str:
    """A local directory holding the dataset's parquet files: ``uri`` itself, or a hub snapshot of it."""
    if not uri.startswith("hf://") and os.path.exists(os.path.expanduser(uri)):
        return uri
    repo_id = uri.removeprefix("hf://").removeprefix("datasets/").strip("/")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SourceError(f"{uri}: not a local path, and huggingface_hub is not installed to download it "
                          f"(pip install huggingface_hub, or pass a local copy in the hub's parquet layout)",
                          "missing file") from None
    try:
        local = snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.parquet", "**/*.parquet"])
        if not any(name.endswith(".parquet") for _, _, names in os.walk(local) for name in names):
            # Datasets stored in other formats have a parquet conversion on this branch.
            local = snapshot_download(repo_id, repo_type="dataset", revision="refs/convert/parquet",
                                      allow_patterns=["*.parquet", "**/*.parquet"])
    except Exception as err:  # noqa: BLE001 -- network, missing repo, auth: all end the same way for the user
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise SourceError(f"{uri}: no such local path, and it cannot be fetched as the Hugging Face dataset "
                          f"{repo_id!r} ({type(err).__name__}: {first_line}); offline, pass a local directory "
                          f"in the hub's parquet layout", "missing file") from None
    log.info("Hugging Face dataset %s -> %s", repo_id, local)
    return local


# ---- manifests -------------------------------------------------------------------------------------------------


def _apply_manifest(manifest: str, files: list[SourceFile], opts: ReadOptions, *, s3_endpoint: str | None,
                    s3_region: str | None) -> tuple[list[SourceFile], ReadOptions]:
    """Labels from a CSV/TSV manifest: columns (path|file, label) label whole files, (id, label) records."""
    import pyarrow.csv as pacsv

    fs, path, scheme = _filesystem(manifest, s3_endpoint, s3_region)
    display = f"{scheme}{path}" if scheme else path
    try:
        with fs.open_input_stream(path, compression="detect") as stream:
            delimiter = "\t" if path.lower().removesuffix(".gz").endswith((".tsv", ".tab")) else ","
            table = pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                   convert_options=pacsv.ConvertOptions(auto_dict_encode=False,
                                                                        strings_can_be_null=False))
    except FileNotFoundError:
        raise SourceError(f"{display}: manifest not found", "missing file") from None
    except OSError as err:
        raise (_s3_error(err, display) if scheme else SourceError(f"{display}: cannot read manifest: {err}")) \
            from None
    except pa.ArrowInvalid as err:
        raise SourceError(f"{display}: malformed manifest: {err}", "malformed manifest") from None
    cols = {c.lower(): c for c in table.column_names}
    label_col = cols.get(opts.label_column.lower()) or cols.get("label") or cols.get("class")
    key_col = next((cols[c] for c in ("path", "file", "filename", "uri") if c in cols), None)
    id_col = next((cols[c] for c in _ID_ALIASES if c in cols), None)
    if label_col is None or (key_col is None and id_col is None):
        raise SourceError(f"{display}: a manifest needs a label column ({opts.label_column!r}) and a 'path' or "
                          f"'id' column; found {table.column_names}", "malformed manifest")
    labels = [str(v) if v is not None else None for v in table.column(label_col).to_pylist()]
    if key_col is not None:
        mapping = dict(zip((str(k) for k in table.column(key_col).to_pylist()), labels))
        out = []
        for f in files:
            keys = (f.display, f.path, f.relative, PurePosixPath(f.path).name)
            label = next((mapping[k] for k in keys if k in mapping), None)
            out.append(replace(f, file_label=label) if label is not None else f)
        if not any(f.file_label for f in out):
            raise SourceError(f"{display}: no listed path matches any of the {len(files)} files to read "
                              f"(e.g. {files[0].relative!r})", "malformed manifest")
        return out, opts
    mapping = {str(k): v for k, v in zip(table.column(id_col).to_pylist(), labels) if v is not None}
    return files, replace(opts, record_labels=mapping)


# ================================================================================================================
# Reading one file (runs inside Ray read tasks)
# ================================================================================================================

_OK, _EMPTY, _INVALID, _MISSING_LABEL, _UNKNOWN_LABEL, _OUT_OF_RANGE = range(6)
_REASONS = {_EMPTY: "empty sequence", _INVALID: "invalid characters", _MISSING_LABEL: "missing label",
            _UNKNOWN_LABEL: "unknown label", _OUT_OF_RANGE: "label out of range"}
_NOT_ACGTN = "[^ACGTN]"


@dataclass
class _RawChunk:
    """Records of one file before cleaning: sequences, labels (any type, or None), ids, 1-based numbers."""

    sequences: pa.Array
    labels: pa.Array | None
    ids: pa.Array
    first_record: int


def read_source_file(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions,
                     skips: SkipCounter | None = None) -> Iterator[pa.Table]:
    """Clean, labelled tables of at most `CHUNK_ROWS` records from one file (used by read tasks)."""
    tally = _Tally(src.display, opts.bad_records, skips)
    reader = {"csv": _read_csv, "tsv": _read_csv, "parquet": _read_parquet, "fasta": _read_fastx,
              "fastq": _read_fastx, "bam": _read_bam}[src.format]
    remaining = opts.limit
    try:
        for chunk in reader(fs, src, opts, tally):
            table = _clean(chunk, src, opts, tally)
            tally.flush()
            if remaining is not None:
                table = table.slice(0, remaining)
                remaining -= table.num_rows
            if table.num_rows:
                yield table
            if remaining == 0:
                return
    except FileNotFoundError:
        raise SourceError(f"{src.display}: file disappeared before it could be read", "missing file") from None
    except OSError as err:
        if src.display.startswith("s3://"):
            raise _s3_error(err, src.display) from None
        raise SourceError(f"{src.display}: cannot read: {err}", "io error") from None
    finally:
        tally.flush()
        tally.log_summary()


def _id_array(src: SourceFile, start: int, n: int) -> pa.Array:
    return pa.array([f"{src.relative}:{i}" for i in range(start, start + n)], pa.string())


def _pick_column(names: list[str], wanted: str, aliases: tuple[str, ...] = ()) -> str | None:
    if wanted in names:
        return wanted
    lower = {n.lower(): n for n in names}
    for name in (wanted.lower(), *aliases):
        if name in lower:
            return lower[name]
    return None


def _table_columns(names: list[str], src: SourceFile, opts: ReadOptions) -> tuple[str, str | None, str | None]:
    seq_aliases = _SEQUENCE_ALIASES if opts.sequence_column == "sequence" else ()
    seq_col = _pick_column(names, opts.sequence_column, seq_aliases)
    if seq_col is None:
        raise SourceError(f"{src.display}: no sequence column {opts.sequence_column!r} (columns: "
                          f"{', '.join(names)}); set data.sequence_column", "missing column")
    label_col = None
    if opts.label_from in ("auto", "column"):
        label_col = _pick_column(names, opts.label_column, ("label", "labels", "class") if
                                 opts.label_column == "label" else ())
        if label_col is None and (opts.label_from == "column" or src.file_label is None):
            raise SourceError(f"{src.display}: no label column {opts.label_column!r} (columns: "
                              f"{', '.join(names)}); set data.label_column", "missing column")
    id_col = _pick_column(names, opts.id_column, _ID_ALIASES if opts.id_column == "id" else ())
    return seq_col, label_col, id_col


def _read_csv(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[_RawChunk]:
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
        tally.bad("malformed row", message)
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
                raise SourceError(first_bad[0], "malformed row") from None
            raise SourceError(f"{src.display}: malformed {src.format.upper()}: {err}", "malformed row") from None


def _read_parquet(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[_RawChunk]:
    import pyarrow.parquet as pq

    with fs.open_input_file(src.path) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowInvalid as err:
            raise SourceError(f"{src.display}: not a readable parquet file: {err}", "malformed file") from None
        seq_col, label_col, id_col = _table_columns(parquet.schema_arrow.names, src, opts)
        columns = [c for c in (seq_col, label_col, id_col) if c is not None]
        record = 1
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            yield _table_chunk(batch, seq_col, label_col, id_col, src, record)
            record += batch.num_rows


def _table_chunk(batch: pa.RecordBatch, seq_col: str, label_col: str | None, id_col: str | None,
                 src: SourceFile, record: int) -> _RawChunk:
    ids = batch.column(id_col).cast(pa.string()) if id_col else _id_array(src, record, batch.num_rows)
    if id_col and ids.null_count:
        ids = pc.if_else(pc.is_null(ids), _id_array(src, record, batch.num_rows), ids)
    labels = batch.column(label_col) if label_col else None
    return _RawChunk(batch.column(seq_col), labels, ids, record)


_HEADER_LABEL_CACHE: dict[str, re.Pattern] = {}


def _header_label(key: str) -> re.Pattern:
    if key not in _HEADER_LABEL_CACHE:
        _HEADER_LABEL_CACHE[key] = re.compile(rf"(?:^|[\s;|,]){re.escape(key)}=([^\s;|,]+)")
    return _HEADER_LABEL_CACHE[key]


def _read_fastx(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[_RawChunk]:
    use_header = opts.label_from in ("auto", "header")
    use_manifest = opts.label_from in ("auto", "manifest") and opts.record_labels is not None
    if opts.label_from in ("column", "tag"):
        raise SourceError(f"{src.display}: label_from={opts.label_from!r} does not apply to "
                          f"{src.format.upper()} files (use header, file or manifest)", "bad option")
    pattern = _header_label(opts.header_label_key)

    def on_error(err: FastxError) -> None:
        tally.bad(err.reason, str(err))

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
                    yield _record_chunk(seqs, labels, ids, first)
                    first = number + 1
                    seqs, labels, ids, n_bases = [], [], [], 0
        except FastxError as err:
            raise SourceError(str(err), err.reason) from None
    if seqs:
        yield _record_chunk(seqs, labels, ids, first)


def _record_chunk(seqs: list[str], labels: list, ids: list[str], first: int) -> _RawChunk:
    return _RawChunk(pa.array(seqs, pa.string()),
                     pa.array([None if v is None else str(v) for v in labels], pa.string()),
                     pa.array(ids, pa.string()), first)


def _read_bam(fs: pafs.FileSystem, src: SourceFile, opts: ReadOptions, tally: _Tally) -> Iterator[_RawChunk]:
    import pysam

    if opts.label_from in ("column", "header"):
        raise SourceError(f"{src.display}: label_from={opts.label_from!r} does not apply to BAM/CRAM files "
                          f"(use tag, file or manifest)", "bad option")
    lower = src.path.lower()
    mode = "rc" if lower.endswith(".cram") else "r" if lower.endswith(".sam") else "rb"
    use_tag = opts.label_from in ("auto", "tag")
    use_manifest = opts.label_from in ("auto", "manifest") and opts.record_labels is not None
    with _local_copy(fs, src) as local:
        try:
            bam = pysam.AlignmentFile(local, mode, check_sq=False, reference_filename=opts.cram_reference)
        except (ValueError, OSError) as err:
            raise SourceError(f"{src.display}: cannot open as {'CRAM' if mode == 'rc' else 'BAM/SAM'}: {err}",
                              "malformed file") from None
        with bam:
            group_fields = {rg.get("ID"): rg for rg in bam.header.to_dict().get("RG", [])}
            seqs: list[str] = []
            labels: list = []
            ids: list[str] = []
            first = number = 0
            try:
                for read in bam.fetch(until_eof=True):
                    if read.is_secondary or read.is_supplementary:
                        tally.bad("secondary/supplementary alignment",
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
                        yield _record_chunk(seqs, labels, ids, first)
                        seqs, labels, ids, first = [], [], [], 0
            except (OSError, ValueError) as err:
                raise SourceError(f"{src.display}: after record {number}: truncated or corrupt file: {err}",
                                  "truncated file") from None
            if seqs:
                yield _record_chunk(seqs, labels, ids, first)


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


# ---- cleaning and labelling (vectorized per chunk) -------------------------------------------------------------


def _clean(chunk: _RawChunk, src: SourceFile, opts: ReadOptions, tally: _Tally) -> pa.Table:
    """Normalize sequences, map labels to ids, and raise on or count/drop the bad records of a chunk."""
    seqs = chunk.sequences
    if not pa.types.is_string(seqs.type):
        seqs = seqs.cast(pa.string())
    seqs = seqs.fill_null("")
    clean = _only_acgtn(seqs)  # the common case: nothing to normalize
    if not clean and pc.any(pc.match_substring_regex(seqs, r"\s")).as_py():
        seqs = pc.replace_substring_regex(seqs, r"\s+", "")
    if not clean:
        seqs = pc.utf8_upper(seqs)
    n = len(seqs)
    codes = np.zeros(n, dtype=np.int8)
    codes[pc.equal(pc.binary_length(seqs), 0).to_numpy(zero_copy_only=False)] = _EMPTY
    if opts.invalid_chars != "unk" and not clean:
        invalid = pc.match_substring_regex(seqs, _NOT_ACGTN)
        if pc.any(invalid).as_py():
            if opts.invalid_chars == "n":
                seqs = pc.replace_substring_regex(seqs, _NOT_ACGTN, "N")
            else:
                mask = invalid.to_numpy(zero_copy_only=False) & (codes == _OK)
                codes[mask] = _INVALID
    if opts.label_from == "none":  # unlabelled sequences (pre-training): every label is null
        labels = pa.nulls(n, pa.int64())
    else:
        label_ids, label_codes = _label_ids(chunk.labels, src.file_label, n, opts.class_names)
        take = (codes == _OK) & (label_codes != _OK)
        codes[take] = label_codes[take]
        labels = pa.array(label_ids, pa.int64())
    table = pa.Table.from_arrays([seqs, labels, chunk.ids], schema=SEQUENCE_SCHEMA)
    bad = np.flatnonzero(codes)
    if not len(bad):
        return table
    for row in bad:
        reason = _REASONS[int(codes[row])]
        tally.bad(reason, _bad_message(reason, int(row), chunk, table, src, opts))
    return table.filter(pa.array(codes == _OK))


_ACGTN_BYTES = np.zeros(256, dtype=bool)
_ACGTN_BYTES[np.frombuffer(b"ACGTN", dtype=np.uint8)] = True


def _only_acgtn(seqs: pa.Array) -> bool:
    """Whether every byte of a (null-free) string array is one of ACGTN, checked on its data buffer."""
    if seqs.null_count:
        return False
    offsets = np.frombuffer(seqs.buffers()[1], dtype=np.int32)[seqs.offset:seqs.offset + len(seqs) + 1]
    data = seqs.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return True
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return bool(_ACGTN_BYTES[raw].all())


def _bad_message(reason: str, row: int, chunk: _RawChunk, table: pa.Table, src: SourceFile,
                 opts: ReadOptions) -> str:
    record = chunk.first_record + row
    rid = table.column("id")[row].as_py()
    where = f"{src.display}: record {record}" + (f" (id {rid})" if rid and not rid.endswith(f":{record}") else "")
    raw = chunk.labels[row].as_py() if chunk.labels is not None else src.file_label
    if reason == "invalid characters":
        chars = sorted(set(re.findall(_NOT_ACGTN, table.column("sequence")[row].as_py())))
        detail = f"characters {''.join(chars)!r} outside ACGTN (invalid_chars='reject')"
    elif reason == "unknown label":
        known = f"known: {', '.join(opts.class_names)}" if opts.class_names else \
            "string labels need class_names (data.class_names)"
        detail = f"{raw!r} is not a class ({known})"
    elif reason == "label out of range":
        top = f"0..{len(opts.class_names) - 1}" if opts.class_names else "0 or more"
        detail = f"label id {raw} outside {top}"
    elif reason == "missing label":
        detail = {"header": f"no '{opts.header_label_key}=' field in the header",
                  "tag": f"no {opts.label_tag} tag on the read or its read group",
                  "manifest": "record id not in the manifest"}.get(opts.label_from, "no label")
    else:
        detail = "no bases"
    return f"{where}: {reason}: {detail}"


def _label_ids(raw: pa.Array | None, fallback: str | None, n: int,
               class_names: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Label ids (int64) and per-row problem codes from integer, float or string labels (or a file label)."""
    if raw is None:
        raw = pa.nulls(n, pa.string())
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    if fallback is not None and raw.null_count:
        raw = pc.if_else(pc.is_null(raw), pa.scalar(fallback), raw.cast(pa.string()))
    ids = np.full(n, -1, dtype=np.int64)
    codes = np.zeros(n, dtype=np.int8)
    kind = raw.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        valid = raw.is_valid().to_numpy(zero_copy_only=False)
        ids[valid] = raw.filter(raw.is_valid()).cast(pa.int64()).to_numpy()
        codes[~valid] = _MISSING_LABEL
    elif pa.types.is_floating(kind):
        values = raw.to_numpy(zero_copy_only=False).astype(np.float64)
        valid = ~np.isnan(values)
        integral = valid & (np.mod(values, 1) == 0)
        ids[integral] = values[integral].astype(np.int64)
        codes[~valid] = _MISSING_LABEL
        codes[valid & ~integral] = _UNKNOWN_LABEL
    else:
        text = pc.utf8_trim_whitespace(raw.cast(pa.string()))
        missing = pc.or_kleene(pc.is_null(text), pc.equal(text, "")).fill_null(True)
        missing = missing.to_numpy(zero_copy_only=False)
        codes[missing] = _MISSING_LABEL
        found = np.zeros(n, dtype=bool)
        if class_names:
            index = pc.index_in(text, value_set=pa.array(class_names, pa.string()))
            found = index.is_valid().to_numpy(zero_copy_only=False)
            ids[found] = index.filter(index.is_valid()).to_numpy()
        digits = pc.match_substring_regex(text, r"^-?\d+$").fill_null(False).to_numpy(zero_copy_only=False)
        numeric = digits & ~found & ~missing
        if numeric.any():
            ids[numeric] = np.asarray(text.filter(pa.array(numeric)).to_pylist(), dtype=np.int64)
        codes[~missing & ~found & ~numeric] = _UNKNOWN_LABEL
    top = len(class_names) if class_names else np.iinfo(np.int64).max
    codes[(codes == _OK) & ((ids < 0) | (ids >= top))] = _OUT_OF_RANGE
    return ids, codes


# ================================================================================================================
# Checks before Ray starts
# ================================================================================================================

PREFLIGHT_FILES = 32
"""`preflight` looks at the start of at most this many files per plan (each costs a request on S3)."""
PREFLIGHT_BYTES = 1 << 16


def preflight(plan: SourcePlan) -> None:
    """Look at the start of each file (up to `PREFLIGHT_FILES`) on the driver, before any Ray task runs.

    Empty files, a table with a header and no records, missing columns and unusable labels fail here, naming
    the file, instead of inside a read task. With ``bad_records="skip"`` an empty file is left to the readers,
    which skip and count it.
    """
    from raycad.data.records import check_preview

    for src in plan.files[:PREFLIGHT_FILES]:
        if src.size == 0:
            if plan.options.bad_records == "skip":
                continue
            raise SourceError(f"{src.display}: empty file (no header, no records)", "unreadable_file")
        if src.format not in ("csv", "tsv", "parquet"):
            continue
        preview = _preview_table(plan.filesystem, src)
        if preview is None:
            if plan.options.bad_records == "skip":
                continue
            raise SourceError(f"{src.display}: empty file (no header, no records)", "unreadable_file")
        _, label_col, _ = _table_columns(preview.column_names, src, plan.options)
        if plan.options.bad_records == "error":
            check_preview(src.display, preview, label_col, plan.options.class_names, src.file_label is not None)


def _preview_table(fs: pafs.FileSystem, src: SourceFile) -> pa.Table | None:
    """The first rows of a table file, all columns as strings (parquet: its first row group); None if empty."""
    if src.format == "parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(src.path) as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except pa.ArrowInvalid as err:
                raise SourceError(f"{src.display}: not a readable parquet file: {err}", "unreadable_file") from None
            if parquet.metadata.num_rows == 0:
                return parquet.schema_arrow.empty_table()
            return parquet.read_row_group(0).slice(0, 1000)
    import pyarrow.csv as pacsv

    with fs.open_input_stream(src.path, compression="detect") as stream:
        head = stream.read(PREFLIGHT_BYTES)
    if not head.strip():
        return None
    if len(head) == PREFLIGHT_BYTES and b"\n" in head:  # cut at the last full line
        head = head[:head.rindex(b"\n") + 1]
    parse = pacsv.ParseOptions(delimiter="\t" if src.format == "tsv" else ",",
                               invalid_row_handler=lambda row: "skip")
    try:
        names = pacsv.open_csv(pa.BufferReader(head), parse_options=parse).schema.names
        return pacsv.read_csv(pa.BufferReader(head), parse_options=parse, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}))
    except pa.ArrowInvalid as err:
        raise SourceError(f"{src.display}: malformed {src.format.upper()}: {err}", "malformed_record") from None


# ================================================================================================================
# The Ray Datasource and the public entry points
# ================================================================================================================


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


_DEFAULTS: dict[str, Any] = {
    "format": "auto", "sequence_column": "sequence", "label_column": "label", "id_column": "id",
    "class_names": None, "label_from": "auto", "manifest": None, "header_label_key": "label", "label_tag": "LB",
    "invalid_chars": "unk", "bad_records": "error", "limit": None, "s3_endpoint": None, "s3_region": None,
    "cram_reference": None,
}


def read_sequences(uri: str | os.PathLike | Sequence[str | os.PathLike], data: DataSection | None = None, *,
                   split: str | None = None, format: Format | None = None, sequence_column: str | None = None,
                   label_column: str | None = None, id_column: str | None = None,
                   class_names: Sequence[str] | None = None, label_from: LabelFrom | None = None,
                   manifest: str | None = None, header_label_key: str | None = None, label_tag: str | None = None,
                   invalid_chars: InvalidChars | None = None, bad_records: BadRecords | None = None,
                   limit: int | None = None, s3_endpoint: str | None = None, s3_region: str | None = None,
                   cram_reference: str | None = None, skips: SkipCounter | None = None,
                   override_num_blocks: int | None = None, storage: StorageSection | None = None
                   ) -> ray.data.Dataset:
    """Labelled sequences from ``uri`` as a lazy Ray Dataset ``{sequence: string, label: int64, id: string}``.

    Options come from ``data`` (a `raycad.config.DataSection`) and ``storage`` (the config's
    `StorageSection`: S3 endpoint and region) when given; keyword arguments that are not None override them;
    anything still unset takes the default shown in brackets.

    Args:
        uri: a local file, directory or glob; ``s3://bucket/key`` (file, prefix or glob); a Hugging Face
            dataset (``hf://owner/name``, ``owner/name``, or a local copy in the hub's parquet layout); a
            ``healthomics://`` read-set URI (see `raycad.data.healthomics`); or a list of local/S3 URIs.
        split: "train" / "validation" / "test": picks that split in a directory laid out by split
            (``<dir>/<split>/...``, ``<dir>/data/<split>-*.parquet``); ignored for single files and globs.
        format: ["auto"] from file extensions, or one of csv, tsv, parquet, fasta, fastq, bam, hf.
        sequence_column, label_column, id_column: table columns ["sequence", "label", "id"]; ``seq`` is
            accepted for the default sequence column, a missing id column gives ids ``<file>:<row>``.
        class_names: class names in id order; string labels, file stems and tag values map through them.
            [None]: integer labels are used as they are, and class names come from the file layout or the
            manifest when those label the records.
        label_from: ["auto"], "column" (tables), "header" (``label=...`` in FASTA/FASTQ headers; the key is
            ``header_label_key``), "file" (class = parent folder or file stem), "manifest", or "tag" (BAM:
            ``label_tag`` ["LB"] of the read, or of its read group's @RG line). "auto" takes the record's own
            label (column, header, tag, manifest id) and falls back to the file layout when it names classes.
            "none" reads sequences only (every label null; pre-training, prediction).
        manifest: CSV/TSV with ``path,label`` (labels whole files) or ``id,label`` (labels records).
        invalid_chars: characters outside ACGTN after upper-casing: ["unk"] keeps them (the tokenizer maps
            them to [UNK]), "n" replaces them with N, "reject" makes the record bad.
        bad_records: ["error"] raises `SourceError` on the first bad record; "skip" drops and counts them.
        limit: at most this many records in total.
        s3_endpoint, s3_region: for S3-compatible stores; credentials come from the AWS chain.
        cram_reference: reference FASTA for CRAM files.
        skips: a `SkipCounter` that receives the counts of skipped records (per file and reason).
        override_num_blocks: number of read tasks (default: Ray's choice, at most one per file).

    The files are listed now (so missing files, buckets and keys and denied credentials fail here);
    records are read when the dataset executes, inside Ray tasks, and under ``bad_records="error"`` a bad
    record makes that execution raise `SourceError`.
    """
    given = {"format": format, "sequence_column": sequence_column, "label_column": label_column,
             "id_column": id_column, "class_names": class_names, "label_from": label_from, "manifest": manifest,
             "header_label_key": header_label_key, "label_tag": label_tag, "invalid_chars": invalid_chars,
             "bad_records": bad_records, "limit": limit, "s3_endpoint": s3_endpoint, "s3_region": s3_region,
             "cram_reference": cram_reference}
    options = {**_DEFAULTS, **(options_from_config(data, storage) if data is not None else {}),
               **{k: v for k, v in given.items() if v is not None}}
    if isinstance(uri, str) and uri.startswith("healthomics://"):
        return _read_healthomics(uri, options)
    plan = plan_sources(uri, split=split, **options)
    return dataset_from_plan(plan, skips=skips, override_num_blocks=override_num_blocks)


def _read_healthomics(uri: str, options: dict[str, Any]) -> ray.data.Dataset:
    from raycad.data.healthomics.datasource import read_healthomics

    ds = read_healthomics(uri, class_names=list(options["class_names"]) if options["class_names"] else None,
                          region=options["s3_region"],
                          label_policy="none" if options["label_from"] == "none" else None)
    return ds.limit(options["limit"]) if options["limit"] else ds


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


def read_sequences_from_config(uri: str | os.PathLike | Sequence[str | os.PathLike], data: DataSection, *,
                               split: str | None = None, skips: SkipCounter | None = None,
                               **overrides: Any) -> ray.data.Dataset:
    """`read_sequences` with the options of a `DataSection` (``overrides`` win over its fields)."""
    return read_sequences(uri, data, split=split, skips=skips, **overrides)


def options_from_config(data: DataSection, storage: StorageSection | None = None) -> dict[str, Any]:
    """The `read_sequences` options a `DataSection` and the config's `StorageSection` set (fields they lack
    keep their defaults)."""
    options = {name: getattr(data, name) for name in _DEFAULTS if getattr(data, name, None) is not None}
    if storage is not None:
        options.update({k: v for k, v in (("s3_endpoint", storage.endpoint), ("s3_region", storage.region)) if v})
    return options
