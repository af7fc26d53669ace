"""Cut one FASTQ read set into independent per-part reads, so that every part is its own Ray read task.

HealthOmics serves a read set's file in numbered parts (``GetReadSet(partNumber=...)``; or byte ranges of
its S3 access URI). Part boundaries fall anywhere: inside a gzip member, inside a FASTQ record. The rule
that lets each part be read on its own, with no record lost or read twice:

* gzip files are read member by member. Part ``k`` *owns the gzip members that start inside it* (part 0
  starts at offset 0; part ``k > 0`` finds its first member by scanning for a gzip header and proving it with
  a full, CRC-checked decompression). Plain-text files: part ``k`` owns its own bytes.
* In the decompressed text, let ``B_k`` be where part ``k``'s owned text starts. Part ``k`` owns the FASTQ
  records that start in ``(B_k, B_{k+1}]`` (part 0: ``[0, B_1]``). Part ``k > 0`` finds its first record
  with the four-line rule (a line starting with ``@`` whose next-but-one line starts with ``+``), which is
  exact for four-line FASTQ; the last record it owns may end in later parts, which it then fetches too.

raycad's importer writes gzip FASTQ as many small, record-aligned members, so every part has work; a
single-member gzip file still reads correctly, just all in part 0's task.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

FetchPart = Callable[[int], bytes]
"""Bytes of one part of a read set file, by 0-based part index."""

_GZIP_HEADER = b"\x1f\x8b\x08"
_INFLATE_CHUNK = 8 << 20


class ReadSetFormatError(ValueError):
    """A read set file that cannot be streamed by part (corrupt gzip, not four-line FASTQ, truncated)."""


def iter_owned_fastq(fetch: FetchPart, part: int, num_parts: int, *, where: str = "read set",
                     chunk_bytes: int = 4 << 20) -> Iterator[bytes]:
    """Yield the FASTQ text of the records owned by ``part``, in chunks of whole records (~``chunk_bytes``).

    ``fetch(i)`` returns part ``i`` (it is called for ``part`` and, when the last owned record or gzip
    member runs on, for the parts after it). ``where`` names the read set in error messages.
    """
    if not 0 <= part < num_parts:
        raise ValueError(f"{where}: part {part} out of range (the file has {num_parts} parts)")
    first = fetch(part)
    later = _LaterParts(fetch, part + 1, num_parts)
    if part == 0:
        head = first if len(first) >= 2 else first + next(iter(later), b"")[:2]
        gzipped = head[:2] == b"\x1f\x8b"
    else:
        gzipped = not _looks_like_text(first)
    if gzipped:
        pieces = _gzip_pieces(first, part, later, where)
    else:
        pieces = _plain_pieces(first, later)
    yield from _owned_records(pieces, part == 0, chunk_bytes, where)


def _looks_like_text(data: bytes) -> bool:
    """Plain FASTQ is printable ASCII; compressed bytes are not (a sample of 4 KiB decides; parts are MiBs)."""
    sample = data[:4096]
    return not sample.translate(None, bytes(range(32, 127)) + b"\n\r\t")


class _LaterParts:
    """The parts after the owned one, fetched lazily; cached only while a gzip member start is being proved."""

    def __init__(self, fetch: FetchPart, start: int, stop: int) -> None:
        self.fetch, self.next, self.stop = fetch, start, stop
        self.cache: list[bytes] = []
        self.keep = True

    def __iter__(self) -> Iterator[bytes]:
        i = 0
        while True:
            if i < len(self.cache):
                yield self.cache[i]
            elif self.next < self.stop:
                data = self.fetch(self.next)
                self.next += 1
                if self.keep:
                    self.cache.append(data)
                else:
                    i -= 1  # not cached: keep the index pointing past the cache
                yield data
            else:
                return
            i += 1


def _plain_pieces(first: bytes, later: _LaterParts) -> Iterator[tuple[bool, bytes]]:
    yield True, first
    for data in later:
        yield False, data


def _inflate(chunks: Iterator[bytes], start: int) -> Iterator[tuple[int, bytes, bool]]:
    """Decompress consecutive gzip members from ``chunks`` (which begin at offset ``start``).

    Yields ``(member_start_offset, text, member_finished)``; raises zlib.error / ReadSetFormatError on
    corrupt or truncated input.
    """
    pos = member = start
    pending = b""
    inflater = None
    while True:
        if not pending:
            pending = next(chunks, None)
            if pending is None:
                if inflater is None:
                    return
                raise ReadSetFormatError("the gzip stream ends inside a member (truncated file)")
            continue
        if inflater is None:
            if not pending.startswith(b"\x1f"):
                if not pending.strip(b"\0") and all(not c.strip(b"\0") for c in chunks):
                    return  # zero padding after the last member
                raise ReadSetFormatError(f"unexpected bytes after the gzip member ending at offset {pos}")
            inflater = zlib.decompressobj(wbits=31)
        text = inflater.decompress(pending, _INFLATE_CHUNK)
        if inflater.eof:
            rest = inflater.unused_data
            pos += len(pending) - len(rest)
            yield member, text, True
            member, pending, inflater = pos, rest, None
        else:
            rest = inflater.unconsumed_tail
            pos += len(pending) - len(rest)
            pending = rest
            if text:
                yield member, text, False


def _gzip_pieces(first: bytes, part: int, later: _LaterParts, where: str) -> Iterator[tuple[bool, bytes]]:
    """Text of the gzip members from the first one that starts in ``first``, tagged owned / not owned."""
    own_len = len(first)
    if part == 0:
        candidates: Iterator[int] = iter([0])
    else:
        scan = first
        if b"\x1f" in first[-3:]:  # a header may straddle into the next part
            scan += next(iter(later), b"")[:3]
        candidates = _member_candidates(scan, own_len)
    for start in candidates:
        stream = _inflate(_chain([first[start:]], later), start)
        head: list[bytes] = []
        try:
            for _, text, finished in stream:
                head.append(text)
                if finished:
                    break
            else:
                raise ReadSetFormatError("no complete gzip member")
        except (zlib.error, ReadSetFormatError) as err:
            if part == 0:
                raise ReadSetFormatError(f"{where}: corrupt gzip at the start of the file: {err}") from None
            continue  # not a real member start: gzip magic bytes inside compressed data
        later.keep = False
        yield start < own_len, b"".join(head)
        try:
            for member, text, _ in stream:
                yield member < own_len, text
        except zlib.error as err:
            raise ReadSetFormatError(f"{where}: corrupt gzip data after part {part + 1}: {err}") from None
        except ReadSetFormatError as err:
            raise ReadSetFormatError(f"{where}: {err}") from None
        return


def _member_candidates(data: bytes, stop: int) -> Iterator[int]:
    """Offsets below ``stop`` that look like a gzip member header (magic, deflate, no reserved flag bits)."""
    i = data.find(_GZIP_HEADER)
    while 0 <= i < stop:
        if i + 3 < len(data) and not data[i + 3] & 0xE0:
            yield i
        i = data.find(_GZIP_HEADER, i + 1)


def _chain(*iterables) -> Iterator[bytes]:
    for iterable in iterables:
        yield from iterable


class _OwnedText:
    """A part's text and what follows it, pulled piece by piece from ``(owned, bytes)`` pairs."""

    def __init__(self, pieces: Iterator[tuple[bool, bytes]]) -> None:
        self.pieces = pieces
        self.buf = bytearray()
        self.base = 0
        """Absolute text offset of ``buf[0]``."""
        self.boundary: int | None = None
        """Absolute offset where the first not-owned piece starts."""

    def pull(self) -> bool:
        for owned, text in self.pieces:
            if not owned and self.boundary is None:
                self.boundary = self.base + len(self.buf)
            self.buf.extend(text)
            return True
        return False

    def first_record(self) -> int | None:
        """Offset of the first record starting after offset 0: a ``@`` line whose third line starts with
        ``+``; None when no complete record follows."""
        search = 1
        while True:
            nl = self.buf.find(b"\n@", search - 1)
            if nl < 0:
                search = max(1, len(self.buf))
                if not self.pull():
                    return None
                continue
            start = nl + 1
            line2 = _line_start(self.buf, start, 2)
            if line2 is None or line2 >= len(self.buf):
                if not self.pull():
                    return None  # no complete record after this point: nothing owned
                continue
            if self.buf[line2:line2 + 1] == b"+":
                return start
            search = start + 1


def _owned_records(pieces: Iterator[tuple[bool, bytes]], first_part: bool, chunk_bytes: int,
                   where: str) -> Iterator[bytes]:
    """Walk four-line FASTQ records over the owned text; yield whole-record chunks (see the module docstring)."""
    text = _OwnedText(pieces)
    pos = 0 if first_part else text.first_record()
    if pos is None or (text.boundary is not None and pos > text.boundary):
        return
    buf = text.buf  # the same bytearray: pull() extends it, the loop below trims its front
    chunk_start = pos
    while text.boundary is None or pos <= text.boundary:
        rel = pos - text.base
        end = _line_start(buf, rel, 4)
        if end is None:
            if text.pull():
                continue
            tail = bytes(buf[rel:])
            if tail.strip():
                if tail.count(b"\n") == 3 and not tail.endswith(b"\n"):  # last line has no line break
                    buf.extend(b"\n")
                    continue
                raise ReadSetFormatError(f"{where}: truncated FASTQ record at text offset {pos}: {tail[:60]!r}")
            break
        plus = _line_start(buf, rel, 2)
        if buf[rel:rel + 1] != b"@" or buf[plus:plus + 1] != b"+":
            if not buf[rel:end].strip():
                break  # trailing blank lines
            raise ReadSetFormatError(
                f"{where}: not four-line FASTQ at text offset {pos} (streaming by part needs one line each "
                f"for header, sequence, '+' and qualities): {bytes(buf[rel:rel + 60])!r}")
        pos = text.base + end
        if pos - chunk_start >= chunk_bytes:
            yield bytes(buf[chunk_start - text.base:pos - text.base])
            del buf[:pos - text.base]
            text.base = chunk_start = pos
    if pos > chunk_start:
        yield bytes(buf[chunk_start - text.base:pos - text.base])


def _line_start(buf: bytearray, start: int, n: int) -> int | None:
    """Offset just after the ``n``-th line break at or after ``start`` (None when the buffer has fewer)."""
    i = start
    for _ in range(n):
        j = buf.find(b"\n", i)
        if j < 0:
            return None
        i = j + 1
    return i
