"""What a valid input record is, checked once where records enter raycad.

Every source (tables, FASTA/FASTQ, BAM, Hugging Face, HealthOmics, the bundled demo) yields raw records;
`clean` turns them into `SEQUENCE_SCHEMA` rows ``{sequence, label, id}`` and every later stage (split,
tokenize, train) trusts that schema. What is decided about records lives here, in one place:

- `RecordError`, the one error type of bad input (its message names the file, the record and the problem;
  ``reason`` is a word of `REASONS`). The readers' errors (`raycad.data.sources.SourceError`,
  `raycad.data.fastx.FastxError`) are subclasses, so callers (the CLI) catch one type.
- `clean`: whitespace removed, upper case, RNA read as DNA (``U`` -> ``T``, `rna_to_dna`, whatever
  ``invalid_chars`` says; the records it changed go to ``on_rna(n)``), other characters outside ACGTN kept,
  replaced by N or rejected (``invalid_chars``), labels mapped to ids (`label_ids`); each bad record goes to
  ``on_bad(reason, message)``, which raises or counts it (`raycad.data.sources.skips`), and is dropped;
- labels: `check_label_counts` refuses training data whose labels cannot train the configured classifier
  (a single class, a class id nobody declared, a stray id far above the others);
- lengths: `default_max_length` caps the token length of a user's data at a percentile of the record
  lengths and at the model's trained length, so one outlier does not set the length of every record;
- `check_invalid_fraction` refuses data that is mostly not DNA.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from raycad.data.sources.options import ReadOptions

SEQUENCE_SCHEMA = pa.schema([("sequence", pa.string()), ("label", pa.int64()), ("id", pa.string())])
"""The schema of clean records: what every source yields and every later stage reads."""

REASONS = ("empty_sequence", "invalid_characters", "missing_label", "unknown_label", "label_out_of_range",
           "malformed_record", "unreadable_file", "missing_file", "bad_option", "secondary_alignment")
"""Why a record (or file) is bad: the vocabulary of `RecordError.reason` and of skip counts, from the readers
(`raycad.data.sources`) to the data report (``secondary_alignment``: BAM records skipped, never an error)."""

MAX_LENGTH_PERCENTILE = 99.0
"""`default_max_length` keeps every record up to this percentile of lengths whole."""

MAX_INVALID_FRACTION = 0.05
"""More characters than this outside ACGTN (after U -> T) in a split: not DNA, refuse."""


class RecordError(ValueError):
    """Bad input: the message names the source (file/URI), the record and the problem."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep `reason` when the error crosses a Ray task boundary
        return (type(self), (str(self), self.reason))


# ---- normalisation -----------------------------------------------------------------------------------------------

_OK, _EMPTY, _INVALID, _MISSING_LABEL, _UNKNOWN_LABEL, _OUT_OF_RANGE = range(6)
_CODE_REASONS = {_EMPTY: "empty_sequence", _INVALID: "invalid_characters", _MISSING_LABEL: "missing_label",
                 _UNKNOWN_LABEL: "unknown_label", _OUT_OF_RANGE: "label_out_of_range"}
_NOT_ACGTN = "[^ACGTN]"


@dataclass
class RawRecords:
    """Records as a source read them, before `clean`: sequences, labels (any type, or None), ids, and where
    they come from (``source`` shown to users; ``first_record`` the 1-based number of the first, when the
    source numbers its records; ``file_label`` the label of records without one)."""

    sequences: pa.Array
    labels: pa.Array | None
    ids: pa.Array
    source: str
    first_record: int | None = None
    file_label: str | None = None


def clean(raw: RawRecords, opts: ReadOptions, on_bad: Callable[[str, str], None],
          on_rna: Callable[[int], None] | None = None) -> pa.Table:
    """`SEQUENCE_SCHEMA` rows of the good records of ``raw`` (see the module doc); each bad one goes to
    ``on_bad(reason, message)`` (which raises under ``bad_records="error"``) and is dropped; ``on_rna(n)``
    hears how many of the good records held U (read as T)."""
    seqs = raw.sequences
    if not pa.types.is_string(seqs.type):
        seqs = seqs.cast(pa.string())
    seqs = seqs.fill_null("")
    ok = _only_acgtn(seqs)  # the common case: nothing to normalise
    if not ok and pc.any(pc.match_substring_regex(seqs, r"\s")).as_py():
        seqs = pc.replace_substring_regex(seqs, r"\s+", "")
    rna = None
    if not ok:
        seqs, rna = rna_to_dna(pc.utf8_upper(seqs))
    n = len(seqs)
    codes = np.zeros(n, dtype=np.int8)
    codes[pc.equal(pc.binary_length(seqs), 0).to_numpy(zero_copy_only=False)] = _EMPTY
    if opts.invalid_chars != "unk" and not ok:
        invalid = pc.match_substring_regex(seqs, _NOT_ACGTN)
        if pc.any(invalid).as_py():
            if opts.invalid_chars == "n":
                seqs = pc.replace_substring_regex(seqs, _NOT_ACGTN, "N")
            else:
                codes[invalid.to_numpy(zero_copy_only=False) & (codes == _OK)] = _INVALID
    if opts.label_from == "none":  # unlabelled sequences (pre-training): every label is null
        labels = pa.nulls(n, pa.int64())
    else:
        ids, label_codes = label_ids(raw.labels, raw.file_label, n, opts.class_names)
        take = (codes == _OK) & (label_codes != _OK)
        codes[take] = label_codes[take]
        labels = pa.array(ids, pa.int64())
    table = pa.Table.from_arrays([seqs, labels, raw.ids.cast(pa.string())], schema=SEQUENCE_SCHEMA)
    kept_rna = int((rna & (codes == _OK)).sum()) if rna is not None else 0  # the RNA records kept
    if on_rna is not None and kept_rna:
        on_rna(kept_rna)
    bad = np.flatnonzero(codes)
    if not len(bad):
        return table
    for row in bad:
        reason = _CODE_REASONS[int(codes[row])]
        on_bad(reason, _bad_message(reason, int(row), raw, table, opts))
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
    bytes_ = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return bool(_ACGTN_BYTES[bytes_].all())


def _bad_message(reason: str, row: int, raw: RawRecords, table: pa.Table, opts: ReadOptions) -> str:
    rid = table.column("id")[row].as_py()
    if raw.first_record is None:
        where = f"{raw.source}: record {rid!r}"
    else:
        record = raw.first_record + row
        where = f"{raw.source}: record {record}" + (f" (id {rid})" if rid and not rid.endswith(f":{record}") else "")
    label = raw.labels[row].as_py() if raw.labels is not None else raw.file_label
    if reason == "invalid_characters":
        chars = sorted(set(re.findall(_NOT_ACGTN, table.column("sequence")[row].as_py())))
        detail = f"characters {''.join(chars)!r} outside ACGTN (invalid_chars='reject')"
    elif reason == "unknown_label":
        known = f"known: {', '.join(opts.class_names)}" if opts.class_names else \
            "string labels need class_names (data.class_names)"
        detail = f"{label!r} is not a class ({known})"
    elif reason == "label_out_of_range":
        top = f"0..{len(opts.class_names) - 1}" if opts.class_names else "0 or more"
        detail = f"label id {label} outside {top}"
    elif reason == "missing_label":
        detail = {"header": f"no '{opts.header_label_key}=' field in the header",
                  "tag": f"no {opts.label_tag} tag on the read or its read group",
                  "manifest": "record id not in the manifest"}.get(opts.label_from, "no label")
    else:
        detail = "no bases"
    return f"{where}: {reason.replace('_', ' ')}: {detail}"


def label_ids(labels: pa.Array | None, fallback: str | None, n: int,
              class_names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Label ids (int64) and per-row problem codes from integer, float or string labels (or a file label)."""
    raw = pa.nulls(n, pa.string()) if labels is None else labels
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
        codes = _string_label_ids(raw, class_names, ids, codes)
    top = len(class_names) if class_names else np.iinfo(np.int64).max
    codes[(codes == _OK) & ((ids < 0) | (ids >= top))] = _OUT_OF_RANGE
    return ids, codes


def _string_label_ids(raw: pa.Array, class_names: Sequence[str] | None, ids: np.ndarray,
                      codes: np.ndarray) -> np.ndarray:
    """String labels: a class name (its index) or an integer id; fills ``ids`` and returns the codes."""
    n = len(raw)
    text = pc.utf8_trim_whitespace(raw.cast(pa.string()))
    missing = pc.or_kleene(pc.is_null(text), pc.equal(text, "")).fill_null(True)
    missing = missing.to_numpy(zero_copy_only=False)
    codes[missing] = _MISSING_LABEL
    found = np.zeros(n, dtype=bool)
    if class_names:
        index = pc.index_in(text, value_set=pa.array(list(class_names), pa.string()))
        found = index.is_valid().to_numpy(zero_copy_only=False)
        ids[found] = index.filter(index.is_valid()).to_numpy()
    digits = pc.match_substring_regex(text, r"^-?\d+$").fill_null(False).to_numpy(zero_copy_only=False)
    numeric = digits & ~found & ~missing
    if numeric.any():
        ids[numeric] = np.asarray(text.filter(pa.array(numeric)).to_pylist(), dtype=np.int64)
    codes[~missing & ~found & ~numeric] = _UNKNOWN_LABEL
    return codes


def rna_to_dna(sequences: pa.Array | pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray]:
    """``U``/``u`` -> ``T``/``t``, and a bool per record: whether it held any U (was RNA). The one rule for
    RNA: `clean` applies it to every record read, `raycad.infer.predictor` to raw strings scored directly."""
    has_u = pc.fill_null(pc.match_substring(sequences, "U", ignore_case=True), False)
    rna = np.asarray(has_u, dtype=bool) if isinstance(has_u, pa.Array) else has_u.to_numpy(zero_copy_only=False)
    if rna.any():
        sequences = pc.replace_substring(pc.replace_substring(sequences, "U", "T"), "u", "t")
    return sequences, rna.astype(bool)


# ---- labels ------------------------------------------------------------------------------------------------------


def check_label_counts(counts: Mapping[int, int], class_names: Sequence[str], source: str,
                       declared: bool) -> None:
    """Refuse training labels that would silently train the wrong classifier.

    ``counts`` maps label id -> records in the training split; ``declared`` says whether the class names were
    given (config, task, file layout) rather than inferred from the largest id.
    """
    present = sorted(label for label, n in counts.items() if n > 0)
    if not present:
        raise RecordError(f"{source}: the training data has no labelled records", "missing_label")
    if len(present) == 1:
        name = class_names[present[0]] if 0 <= present[0] < len(class_names) else present[0]
        raise RecordError(f"{source}: every training record has label {name!r}: a classifier needs at least two "
                          f"classes", "label_out_of_range")
    if not declared:
        missing = [i for i in range(len(class_names)) if counts.get(i, 0) == 0]
        if missing:
            stray = {i: counts[i] for i in present if i > max(m for m in missing)}
            raise RecordError(
                f"{source}: label ids {present} skip {missing}: a stray label would train a "
                f"{len(class_names)}-class model (records per id: {dict(sorted(counts.items()))}{', stray: ' + str(stray) if stray else ''}); "
                f"fix the labels or set data.class_names", "label_out_of_range")


def infer_class_names(highest: Any, source: str) -> list[str]:
    """Class names "0".."k" from the largest integer label of the training data."""
    if highest is None:
        raise RecordError(f"{source}: the training data has no labels (no label column, or every label is empty); "
                          f"set data.label_column or data.class_names", "missing_label")
    if isinstance(highest, (float, np.floating)) and float(highest).is_integer():
        raise RecordError(f"{source}: labels are floats ({highest!r}); write integer ids (0, 1, ...) or class "
                          f"names with data.class_names", "label_out_of_range")
    if not isinstance(highest, (int, np.integer)):
        raise RecordError(f"{source}: labels are {type(highest).__name__}s, not integer ids: set data.class_names "
                          f"to the label values in id order", "unknown_label")
    return [str(i) for i in range(int(highest) + 1)]


def check_preview(display: str, preview: pa.Table, label_col: str | None, class_names: Sequence[str] | None,
                  has_file_label: bool) -> None:
    """The first rows of a table file (read before Ray starts): records present, labels usable."""
    if preview.num_rows == 0:
        raise RecordError(f"{display}: no records (the file has a header line only)", "empty_sequence")
    if label_col is None or class_names or has_file_label:
        return
    labels = pc.utf8_trim_whitespace(preview.column(label_col).cast(pa.string()))
    present = labels.filter(pc.invert(pc.fill_null(pc.equal(labels, ""), True)))
    if len(present) == 0:
        raise RecordError(f"{display}: the label column {label_col!r} is empty in the first "
                          f"{preview.num_rows} records", "missing_label")
    ints = pc.match_substring_regex(present, r"^-?\d+$")
    decimals = pc.match_substring_regex(present, r"^-?\d+\.\d*$")
    if not pc.all(ints).as_py() and pc.all(pc.or_(ints, decimals)).as_py():
        example = present.filter(pc.invert(ints))[0].as_py()
        raise RecordError(f"{display}: labels are decimal numbers ({example!r} in column {label_col!r}); write "
                          f"integer class ids (0, 1, ...) or give data.class_names", "unknown_label")


# ---- lengths -----------------------------------------------------------------------------------------------------


def default_max_length(lengths: np.ndarray, trained_length: int | None) -> tuple[int, int]:
    """(max_length, records that will be truncated) for a user's data without a configured max_length.

    The `MAX_LENGTH_PERCENTILE` percentile of record lengths, never above ``trained_length`` (the length the
    model was pretrained at, when known).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    lengths = lengths[lengths > 0]
    if not len(lengths):
        return 0, 0
    cap = int(np.ceil(np.percentile(lengths, MAX_LENGTH_PERCENTILE, method="higher")))
    if trained_length:
        cap = min(cap, int(trained_length))
    return cap, int((lengths > cap).sum())


def trained_length(model: str | None) -> int | None:
    """The sequence length a released Caduceus was pretrained at, from its preset or repo name: "1k" -> 1024,
    "131k" -> 131072 (the power of two the name rounds); None when the name does not say."""
    import math
    import re

    match = re.search(r"[-_](\d+)k(?:[-_]|$)", str(model or ""))
    return 1 << math.ceil(math.log2(int(match.group(1)) * 1000)) if match else None


# ---- content -----------------------------------------------------------------------------------------------------


def check_invalid_fraction(split: str, invalid: int, bases: int, source: str) -> None:
    """Refuse a split whose characters are mostly outside ACGTN (after U -> T): it is not DNA."""
    if bases and invalid / bases > MAX_INVALID_FRACTION:
        raise RecordError(f"{source} [{split}]: {invalid:,} of {bases:,} characters ({100 * invalid / bases:.1f}%) "
                          f"are outside ACGTN (U is read as T): is this DNA? Clean the sequences or set "
                          f"data.invalid_chars=reject to find the records", "invalid_characters")
