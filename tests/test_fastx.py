"""FASTA/FASTQ parsing: plain, gzip, bytes, streams; every malformed case names file, record and problem."""

from __future__ import annotations

import gzip
import io
import pickle

import pytest

from raycad.data.fastx import FastxError, FastxRecord, detect_format, read_fasta, read_fastq, read_fastx

FASTQ = b"@r1 sample=a label=1\nACGT\n+\nIIII\n@r2\nGGCCA\n+r2\nIIIII\n"
FASTA = b">s1 first one\nACGT\nacgtn\n\n>s2\nGG\n"


def test_fastq_from_bytes_path_stream_and_gzip(tmp_path):
    expected = [FastxRecord("r1", "ACGT", "sample=a label=1"), FastxRecord("r2", "GGCCA", "")]
    plain, packed = tmp_path / "reads.fq", tmp_path / "reads.fq.gz"
    plain.write_bytes(FASTQ)
    packed.write_bytes(gzip.compress(FASTQ))
    assert list(read_fastq(FASTQ)) == expected
    assert list(read_fastq(plain)) == expected
    assert list(read_fastq(str(packed))) == expected
    assert list(read_fastq(io.BytesIO(gzip.compress(FASTQ)))) == expected
    assert list(read_fastx(gzip.compress(FASTQ))) == expected  # auto-detected as FASTQ
    # (id, sequence, description) unpacking, as the HealthOmics reader uses it
    assert next(tuple(r) for r in read_fastq(FASTQ)) == ("r1", "ACGT", "sample=a label=1")


def test_fasta_multiline_blank_lines_and_text_stream():
    expected = [FastxRecord("s1", "ACGTacgtn", "first one"), FastxRecord("s2", "GG", "")]
    assert list(read_fasta(FASTA)) == expected
    assert list(read_fastx(io.StringIO(FASTA.decode()))) == expected
    assert list(read_fastx(gzip.compress(FASTA), format="fasta")) == expected


def test_multiline_fastq_and_quality_starting_with_at():
    data = b"@r1\nACGT\nAC\n+\n@@II\nII\n@r2\nA\n+\n@\n"
    assert list(read_fastq(data)) == [FastxRecord("r1", "ACGTAC", ""), FastxRecord("r2", "A", "")]


@pytest.mark.parametrize("data, reason, where", [
    (b"@r1\nACGT\n+\nIII\n@r2\nAC\n+\nII\n", "sequence/quality length mismatch", "record 1 (id r1)"),
    (b"@r1\nACGT\n+\nIIIII\n", "sequence/quality length mismatch", "record 1 (id r1)"),
    (b"@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nII", "truncated record", "record 2 (id r2)"),
    (b"@r1\nACGT\n+\nIIII\n@r2\nACGT\n", "truncated record", "record 2 (id r2)"),
    (b"r1\nACGT\n+\nIIII\n", "bad header", "record 1"),
    (b"@\nACGT\n+\nIIII\n", "bad header", "record 1"),
])
def test_fastq_errors_name_source_record_and_problem(data, reason, where):
    with pytest.raises(FastxError) as info:
        list(read_fastq(data, name="reads.fq"))
    message = str(info.value)
    assert message.startswith("reads.fq, ") and where in message and reason in message
    assert info.value.reason == reason


def test_fasta_bad_header():
    with pytest.raises(FastxError, match=r"x\.fa, line 1: bad header: expected '>'"):
        list(read_fasta(b"ACGT\n>a\nAC\n", name="x.fa"))
    with pytest.raises(FastxError, match=r"record 2, line 3: bad header: empty record id"):
        list(read_fasta(b">a\nAC\n>\nGG\n", name="x.fa"))


def test_truncated_and_corrupt_gzip():
    packed = gzip.compress(FASTQ * 200)
    with pytest.raises(FastxError, match=r"reads\.fq\.gz: truncated gzip: .*end-of-stream"):
        list(read_fastq(packed[: len(packed) // 2], name="reads.fq.gz"))
    with pytest.raises(FastxError, match="corrupt gzip"):
        list(read_fastq(packed[:10] + b"\x00" * 40, name="reads.fq.gz"))


def test_on_error_skips_bad_records_and_resynchronises():
    data = (b"@r1\nACGT\n+\nIII\n"      # short quality: the next header must not be swallowed
            b"@r2\nAC\n+\nII\n"
            b"junk line\n"              # bad header
            b"@r3\nGGG\n+\nIII\n"
            b"@r4\nACGT\n+\nII")       # truncated at the end
    errors: list[FastxError] = []
    records = list(read_fastq(data, name="x.fq", on_error=errors.append))
    assert [r.id for r in records] == ["r2", "r3"]
    assert [e.reason for e in errors] == ["sequence/quality length mismatch", "bad header", "truncated record"]
    packed = gzip.compress(FASTQ * 500)
    errors.clear()
    records = list(read_fastq(packed[:-40], name="x.fq.gz", on_error=errors.append))
    assert 0 < len(records) < 1000 and [e.reason for e in errors] == ["truncated gzip"]


def test_error_pickles_and_formats():
    err = pickle.loads(pickle.dumps(FastxError("truncated record", "eof", "s3://b/x.fq", 7, "r7", 28)))
    assert str(err) == "s3://b/x.fq, record 7 (id r7), line 28: truncated record: eof"
    assert (err.record, err.record_id, err.line) == (7, "r7", 28)


def test_detect_format():
    assert detect_format("a/b.fasta.gz") == "fasta" and detect_format("x.FQ") == "fastq"
    assert detect_format("x.csv") is None
