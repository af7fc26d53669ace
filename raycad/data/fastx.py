"""Streaming FASTA and FASTQ parsing, plain or gzip, from paths, file objects or bytes.

Records come out one at a time as `FastxRecord(id, sequence, description)`; nothing is read ahead beyond
a line or two, so arbitrarily large files stream in constant memory. Sequence lines are joined with their
line breaks and trailing whitespace removed; letters are kept as they are (lower-case soft-masking and
non-ACGTN characters are for the caller to judge). FASTQ qualities are checked against the sequence
length and dropped (Caduceus does not use them).

Malformed input raises `FastxError`, whose message names the source, the record number (1-based), the
record id when known, the line number and the problem, e.g.::

    reads.fq.gz: record 3 (id r3), line 9: sequence/quality length mismatch: 5 bases, 3 quality characters

Pass ``on_error`` to handle errors without stopping: it gets each `FastxError` (its `reason` is a short
category such as "truncated record"), the bad record is skipped and parsing continues (after an
unrecoverable error, such as a truncated gzip stream, the iterator simply ends).

    >>> [tuple(r) for r in read_fastq(b"@r1 x=1\\nACGT\\n+\\nIIII\\n")]
    [('r1', 'ACGT', 'x=1')]
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal, NamedTuple

from raycad.data.records import RecordError

FastxSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | IO[str]
"""A path, the bytes of a whole file, or an open binary or text stream (gzip detected from its content)."""
ErrorHandler = Callable[["FastxError"], None]

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".frn", ".faa")
FASTQ_SUFFIXES = (".fq", ".fastq")
_GZIP_MAGIC = b"\x1f\x8b"


class FastxRecord(NamedTuple):
    """One FASTA/FASTQ record: the id (header up to the first whitespace), the sequence, the rest of the header."""

    id: str
    sequence: str
    description: str


class FastxError(RecordError):
    """A malformed FASTA/FASTQ record; the message names source, record number, record id, line and problem.

    Attributes: ``source``, ``record`` (1-based record number, or None before the first record),
    ``record_id``, ``line`` (1-based), ``reason`` (short category) and ``problem`` (the detail).
    """

    def __init__(self, reason: str, problem: str, source: str, record: int | None = None,
                 record_id: str | None = None, line: int | None = None) -> None:
        self.reason, self.problem, self.source = reason, problem, source
        self.record, self.record_id, self.line = record, record_id, line
        where = [source]
        if record is not None:
            where.append(f"record {record}" + (f" (id {record_id})" if record_id else ""))
        if line is not None:
            where.append(f"line {line}")
        super().__init__(f"{', '.join(where)}: {reason}" + (f": {problem}" if problem else ""), reason)

    def __reduce__(self):  # keep the fields when pickled (errors cross Ray task boundaries)
        return (type(self), (self.reason, self.problem, self.source, self.record, self.record_id, self.line))


def detect_format(name: str | os.PathLike) -> Literal["fasta", "fastq"] | None:
    """"fasta" / "fastq" from a file name (``.fa``, ``.fasta.gz``, ``.fq.gz``...), None when neither."""
    lower = str(name).lower()
    lower = lower.removesuffix(".gz")
    if lower.endswith(FASTA_SUFFIXES):
        return "fasta"
    if lower.endswith(FASTQ_SUFFIXES):
        return "fastq"
    return None


def read_fasta(source: FastxSource, *, name: str | None = None,
               on_error: ErrorHandler | None = None) -> Iterator[FastxRecord]:
    """Stream the records of a FASTA file (multi-line sequences allowed; blank lines ignored)."""
    with _open_text(source, name) as (lines, label):
        yield from _parse_fasta(_LineReader(lines, label), label, on_error)


def read_fastq(source: FastxSource, *, name: str | None = None,
               on_error: ErrorHandler | None = None) -> Iterator[FastxRecord]:
    """Stream the records of a FASTQ file, checking each quality string against its sequence.

    The usual four-line layout is expected; sequences and qualities wrapped over several lines are accepted.
    """
    with _open_text(source, name) as (lines, label):
        yield from _parse_fastq(_LineReader(lines, label), label, on_error)


def read_fastx(source: FastxSource, *, format: Literal["auto", "fasta", "fastq"] = "auto",
               name: str | None = None, on_error: ErrorHandler | None = None) -> Iterator[FastxRecord]:
    """FASTA or FASTQ: ``format="auto"`` decides from the first non-blank character ('>' or '@')."""
    with _open_text(source, name) as (lines, label):
        reader = _LineReader(lines, label)
        if format == "auto":
            first = reader.peek_nonblank()
            format = "fastq" if first is not None and first.startswith("@") else "fasta"
        parse = _parse_fastq if format == "fastq" else _parse_fasta
        yield from parse(reader, label, on_error)


# ---- opening ---------------------------------------------------------------------------------------------------


class _open_text:
    """Context manager giving (iterator of text lines, display name) for any `FastxSource`, gzip or not."""

    def __init__(self, source: FastxSource, name: str | None) -> None:
        self.source, self.name = source, name
        self._close: list[IO] = []

    def __enter__(self) -> tuple[Iterator[str], str]:
        source = self.source
        if isinstance(source, (str, os.PathLike)):
            label = self.name or str(source)
            try:
                raw: IO = open(source, "rb")
            except OSError as err:
                raise FileNotFoundError(f"{label}: cannot open: {err.strerror or err}") from None
            self._close.append(raw)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            label, raw = self.name or "<bytes>", io.BytesIO(bytes(source))
        else:
            label, raw = self.name or getattr(source, "name", None) or "<stream>", source
            if isinstance(raw, io.TextIOBase):
                return iter(raw), str(label)
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[arg-type]
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            buffered = gzip.GzipFile(fileobj=buffered, mode="rb")
            self._close.append(buffered)
        # latin-1 never fails to decode, so stray bytes surface as invalid characters, not as decode errors.
        text = io.TextIOWrapper(buffered, encoding="latin-1", newline=None)
        self._close.append(text)
        return iter(text), str(label)

    def __exit__(self, *exc: object) -> None:
        for stream in reversed(self._close):
            try:
                stream.close() if not isinstance(stream, io.TextIOWrapper) else stream.detach()
            except (OSError, ValueError, EOFError):
                pass


class _LineReader:
    """Numbered lines without line breaks, with look-ahead and push-back; turns gzip failures into errors."""

    def __init__(self, lines: Iterator[str], source: str) -> None:
        self._lines, self.source = lines, source
        self._ahead: deque[str] = deque()
        self.lineno = 0
        self.record = 0
        self.record_id: str | None = None

    def _pull(self) -> str | None:
        try:
            line = next(self._lines)
        except StopIteration:
            return None
        except EOFError:
            raise self.fatal("truncated gzip", "the compressed stream ends before its end-of-stream marker") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as err:
            raise self.fatal("corrupt gzip", str(err)) from None
        return line.rstrip("\r\n")

    def next(self) -> str | None:
        line = self._ahead.popleft() if self._ahead else self._pull()
        if line is not None:
            self.lineno += 1
        return line

    def push_back(self, line: str) -> None:
        self._ahead.appendleft(line)
        self.lineno -= 1

    def peek(self, k: int = 0) -> str | None:
        """The line ``k`` positions ahead (0 = the next one), without consuming it."""
        while len(self._ahead) <= k:
            line = self._pull()
            if line is None:
                return None
            self._ahead.append(line)
        return self._ahead[k]

    def peek_nonblank(self) -> str | None:
        k = 0
        while (line := self.peek(k)) is not None and not line.strip():
            k += 1
        return line

    def error(self, reason: str, problem: str) -> FastxError:
        """An error in the current record (the caller may skip it and go on)."""
        return FastxError(reason, problem, self.source, self.record or None, self.record_id, self.lineno or None)

    def fatal(self, reason: str, problem: str) -> FastxError:
        """An error after which nothing more can be read; it names the last complete line."""
        where = f"after line {self.lineno}" if self.lineno else "before the first line"
        err = FastxError(reason, f"{problem} ({where})", self.source)
        err.fatal = True  # type: ignore[attr-defined]
        return err


def _split_header(header: str) -> tuple[str, str]:
    parts = header.strip().split(None, 1)
    return (parts[0], parts[1] if len(parts) > 1 else "") if parts else ("", "")


def _report(err: FastxError, on_error: ErrorHandler | None) -> None:
    if on_error is None:
        raise err
    on_error(err)


# ---- FASTA -----------------------------------------------------------------------------------------------------


def _parse_fasta(reader: _LineReader, source: str, on_error: ErrorHandler | None) -> Iterator[FastxRecord]:
    header: str | None = None
    header_line = 0
    chunks: list[str] = []
    junk_reported = False
    try:
        while (line := reader.next()) is not None:
            if line.startswith(">"):
                if header is not None:
                    yield from _fasta_record(reader, header, header_line, chunks, on_error)
                reader.record += 1
                header, header_line, chunks = line[1:], reader.lineno, []
                reader.record_id = _split_header(header)[0] or None
                junk_reported = False
            elif header is None:
                if line.strip() and not junk_reported:
                    junk_reported = True
                    _report(reader.error("bad header", f"expected '>' to start a FASTA record, found {line[:30]!r}"),
                            on_error)
            else:
                chunks.append(line.rstrip())
        if header is not None:
            yield from _fasta_record(reader, header, header_line, chunks, on_error)
    except FastxError as err:
        if not getattr(err, "fatal", False) or on_error is None:
            raise
        on_error(err)


def _fasta_record(reader: _LineReader, header: str, header_line: int, chunks: list[str],
                  on_error: ErrorHandler | None) -> Iterator[FastxRecord]:
    record_id, description = _split_header(header)
    if not record_id:
        _report(FastxError("bad header", "empty record id after '>'", reader.source, reader.record, None,
                           header_line), on_error)
        return
    yield FastxRecord(record_id, "".join(chunks), description)


# ---- FASTQ -----------------------------------------------------------------------------------------------------


def _parse_fastq(reader: _LineReader, source: str, on_error: ErrorHandler | None) -> Iterator[FastxRecord]:
    try:
        while True:
            line = reader.next()
            while line is not None and not line.strip():  # blank lines between records
                line = reader.next()
            if line is None:
                return
            reader.record += 1
            reader.record_id = None
            if not line.startswith("@"):
                _report(reader.error("bad header", f"expected '@' to start a FASTQ record, found {line[:30]!r}"),
                        on_error)
                _resync_fastq(reader)
                continue
            record_id, description = _split_header(line[1:])
            reader.record_id = record_id or None
            try:
                record = _fastq_body(reader, record_id, description)
            except FastxError as err:
                if getattr(err, "fatal", False):
                    raise
                _report(err, on_error)
                if err.reason == "bad header":
                    _resync_fastq(reader)
                continue
            yield record
    except FastxError as err:
        if not getattr(err, "fatal", False) or on_error is None:
            raise
        on_error(err)


def _fastq_body(reader: _LineReader, record_id: str, description: str) -> FastxRecord:
    """Sequence line(s), the '+' line and quality line(s) of the record whose header was just read."""
    if not record_id:
        raise reader.error("bad header", "empty record id after '@'")
    seq_parts: list[str] = []
    while True:
        line = reader.next()
        if line is None:
            raise reader.error("truncated record", "file ends before the '+' separator line")
        if line.startswith("+"):
            break
        if line.startswith("@") and seq_parts:
            reader.push_back(line)
            raise reader.error("truncated record", "next '@' header found before the '+' separator line")
        seq_parts.append(line.strip())
    sequence = "".join(seq_parts)
    qual_parts: list[str] = []
    n_qual = 0
    while n_qual < len(sequence):
        line = reader.next()
        if line is None:
            raise reader.error("truncated record", f"file ends inside the quality string "
                                                   f"({n_qual} of {len(sequence)} characters)")
        line = line.strip()
        if n_qual and line.startswith("@") and n_qual + len(line) > len(sequence):
            reader.push_back(line)  # the next record's header: this quality string was short
            break
        qual_parts.append(line)
        n_qual += len(line)
    if n_qual != len(sequence):
        raise reader.error("sequence/quality length mismatch",
                           f"{len(sequence)} bases, {n_qual} quality characters")
    return FastxRecord(record_id, sequence, description)


def _resync_fastq(reader: _LineReader) -> None:
    """After a bad header, drop lines up to the next plausible record start ('@...' with '+' two lines on)."""
    while (line := reader.peek()) is not None:
        after = reader.peek(2)
        if line.startswith("@") and after is not None and after.startswith("+"):
            return
        reader.next()


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether a local file starts with the gzip magic bytes."""
    with open(Path(path), "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC
