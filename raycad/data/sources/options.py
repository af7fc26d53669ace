"""The options of a read (`ReadOptions`), what a read is planned into (`SourceFile`, `SourcePlan`), its
error type (`SourceError`) and the table columns the options pick (`_table_columns`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from raycad.data.records import RecordError

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


def _s3_error(err: OSError, display: str) -> SourceError:
    text = str(err)
    if any(code in text for code in ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                                     "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                     "EXPIRED_TOKEN", "ExpiredToken")):
        return SourceError(f"{display}: access denied: the AWS credentials in use (from the environment, "
                           f"profile or instance role) are wrong, expired or lack permission to read it",
                           "unreadable_file")
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return SourceError(f"{display}: the bucket does not exist", "missing_file")
    return SourceError(f"{display}: cannot read: {text.split(' (Request ID')[0]}", "unreadable_file")


@dataclass(frozen=True)
class ReadOptions:
    """How records are read, cleaned and labelled: the one options object of `read_sequences` and
    `plan_sources` (picklable; read tasks receive it). A config section's fields of the same names set it
    (`read_options`), so a new read option is one field here (and, to set it from a config, one in
    `raycad.config.SourceSection` / `DataSection`)."""

    format: Format = "auto"
    """From file extensions, or one of csv, tsv, parquet, fasta, fastq, bam, hf."""
    sequence_column: str = "sequence"
    """Table column of the sequences (``seq`` is accepted for the default)."""
    label_column: str = "label"
    id_column: str = "id"
    """A missing id column gives ids ``<file>:<row>``."""
    class_names: tuple[str, ...] | None = None
    """Class names in id order; string labels, file stems and tag values map through them. None: integer
    labels are used as they are, and class names come from the file layout or the manifest."""
    label_from: LabelFrom = "auto"
    """"column" (tables), "header" (``<header_label_key>=...`` in FASTA/FASTQ headers), "file" (parent folder
    or file stem), "manifest", "tag" (BAM: ``label_tag`` of the read or its read group), "none" (sequences
    only, every label null), or "auto": the record's own label, else the file layout when it names classes."""
    manifest: str | None = None
    """CSV/TSV with ``path,label`` (labels whole files) or ``id,label`` (labels records)."""
    header_label_key: str = "label"
    label_tag: str = "LB"
    invalid_chars: InvalidChars = "unk"
    """Characters outside ACGTN after upper-casing and U -> T: "unk" keeps them (the tokenizer maps them to [UNK]),
    "n" replaces them with N, "reject" makes the record bad."""
    bad_records: BadRecords = "error"
    """"error" raises `SourceError` on the first bad record; "skip" drops and counts them."""
    limit: int | None = None
    """At most this many records in total."""
    cram_reference: str | None = None
    """Reference FASTA for CRAM files."""
    s3_endpoint: str | None = None
    """S3-compatible store (the config's ``storage.endpoint``); credentials come from the AWS chain."""
    s3_region: str | None = None
    record_labels: dict[str, str] | None = None
    """Labels by record id, from a manifest (filled in by `plan_sources`)."""

    def __post_init__(self) -> None:
        for name, allowed in (("format", Format), ("label_from", LabelFrom), ("invalid_chars", InvalidChars),
                              ("bad_records", BadRecords)):
            if getattr(self, name) not in allowed.__args__:
                raise SourceError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed.__args__)}")
        if not isinstance(self.class_names, (tuple, type(None))) or self.class_names == ():
            object.__setattr__(self, "class_names", tuple(self.class_names) if self.class_names else None)


OPTION_NAMES = tuple(f.name for f in fields(ReadOptions) if f.name != "record_labels")


def read_options(data: Any = None, storage: Any = None, **overrides: Any) -> ReadOptions:
    """`ReadOptions` from ``data`` (a `ReadOptions`, or a config's data section: its fields of the same names),
    ``storage`` (the config's `StorageSection`: S3 endpoint and region), then keyword ``overrides``; None
    values leave what was set before (or the default)."""
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown read option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    values = {name: getattr(data, name) for name in OPTION_NAMES if getattr(data, name, None) is not None}
    if storage is not None:
        values.update({k: v for k, v in (("s3_endpoint", storage.endpoint), ("s3_region", storage.region)) if v})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ReadOptions(**values)


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


# ---- table columns -------------------------------------------------------------------------------------------


def _pick_column(names: list[str], wanted: str, aliases: tuple[str, ...] = ()) -> str | None:
    if wanted in names:
        return wanted
    lower = {n.lower(): n for n in names}
    for name in (wanted.lower(), *aliases):
        if name in lower:
            return lower[name]
    return None


def _table_columns(names: list[str], src: SourceFile, opts: ReadOptions) -> tuple[str, str | None, str | None]:
    """The (sequence, label, id) columns of a table with columns ``names`` (None: no such column)."""
    seq_aliases = _SEQUENCE_ALIASES if opts.sequence_column == "sequence" else ()
    seq_col = _pick_column(names, opts.sequence_column, seq_aliases)
    if seq_col is None:
        raise SourceError(f"{src.display}: no sequence column {opts.sequence_column!r} (columns: "
                          f"{', '.join(names)}); set data.sequence_column", "bad_option")
    label_col = None
    if opts.label_from in ("auto", "column"):
        label_col = _pick_column(names, opts.label_column, ("label", "labels", "class") if
                                 opts.label_column == "label" else ())
        if label_col is None and (opts.label_from == "column" or src.file_label is None):
            raise SourceError(f"{src.display}: no label column {opts.label_column!r} (columns: "
                              f"{', '.join(names)}); set data.label_column", "bad_option")
    id_col = _pick_column(names, opts.id_column, _ID_ALIASES if opts.id_column == "id" else ())
    return seq_col, label_col, id_col
