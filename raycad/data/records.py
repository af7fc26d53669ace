"""What a valid input record is, checked once where records enter raycad.

Every reader (tables, FASTA/FASTQ, BAM, Hugging Face, HealthOmics) yields records ``{sequence, label, id}``;
this module holds what is decided about them, in one place:

- `RecordError`, the one error type of bad input (its message names the file, the record and the problem;
  ``reason`` is a word of `REASONS`). The readers' errors (`raycad.data.sources.SourceError`,
  `raycad.data.fastx.FastxError`, `raycad.data.preprocess.DataError`) are subclasses, so callers (the CLI)
  catch one type.
- normalisation: `rna_to_dna` reads RNA (``U``) as DNA (``T``) and counts the records it changed;
- labels: `check_label_counts` refuses training data whose labels cannot train the configured classifier
  (a single class, a class id nobody declared, a stray id far above the others);
- lengths: `default_max_length` caps the token length of a user's data at a percentile of the record
  lengths and at the model's trained length, so one outlier does not set the length of every record;
- `check_invalid_fraction` refuses data that is mostly not DNA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def rna_to_dna(sequences: pa.Array | pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray]:
    """``U``/``u`` -> ``T``/``t``, and a bool per record: whether it held any U (was RNA)."""
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
