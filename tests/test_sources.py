"""read_sequences: every format round-trips the same records, local == s3://, bad input is named or counted.

The same labelled records are written as CSV, TSV, Parquet, FASTA (labels in headers), FASTQ.gz (one file
per class), the Genomic Benchmarks folder layout, an unaligned BAM (labels in @RG LB) and the Hugging Face
parquet layout; each is read back through Ray and compared by count and an order-independent hash. Bad
input is checked on single files with `read_source_file` (no Ray), and once through Ray for the error and
skip paths.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import run_moto_server

from raycad.config import DataSection
from raycad.data.sources import (
    OPTION_NAMES,
    SEQUENCE_SCHEMA,
    ReadOptions,
    SkipCounter,
    SourceError,
    plan_sources,
    read_options,
    read_sequences,
    read_source_file,
)

CLASSES = ["negative", "positive"]


def make_records(n: int = 48, seed: int = 0) -> list[tuple[str, str, int]]:
    rng = np.random.default_rng(seed)
    return [(f"r{i}", "".join(rng.choice(list("ACGTN"), size=int(rng.integers(10, 90)))),
             int(rng.integers(0, 2))) for i in range(n)]


RECORDS = make_records()


def digest(rows) -> tuple[int, str]:
    """(count, order-independent hash of (sequence, label) pairs)."""
    pairs = sorted(f"{r['sequence']}\t{r['label']}" for r in rows)
    return len(pairs), hashlib.sha256("\n".join(pairs).encode()).hexdigest()


EXPECTED = digest({"sequence": s, "label": y} for _, s, y in RECORDS)


def fasta(records, header_label: bool = True) -> str:
    return "".join(f">{i}{f' label={CLASSES[y]}' if header_label else ''}\n{s[:40]}\n{s[40:]}\n"
                   for i, s, y in records)


def fastq(records) -> str:
    return "".join(f"@{i}\n{s}\n+\n{'I' * len(s)}\n" for i, s, _ in records)


def write_bam(path: Path, records) -> None:
    import pysam

    header = {"HD": {"VN": "1.6", "SO": "unsorted"},
              "RG": [{"ID": f"rg{k}", "LB": name, "SM": "s1"} for k, name in enumerate(CLASSES)]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for rid, seq, y in records:
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.query_sequence, read.flag = rid, seq, 4  # unmapped
            read.query_qualities = pysam.qualitystring_to_array("I" * len(seq))
            read.set_tag("RG", f"rg{y}")
            out.write(read)


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """Format name -> (URI, read_sequences options) holding RECORDS."""
    root = tmp_path_factory.mktemp("formats")
    ids, seqs, labels = zip(*RECORDS)
    out: dict[str, tuple[str, dict]] = {}

    table = pa.table({"id": ids, "sequence": seqs, "label": [CLASSES[y] for y in labels]})
    pacsv.write_csv(table, root / "records.csv")
    out["csv"] = (str(root / "records.csv"), {"class_names": CLASSES})
    pacsv.write_csv(pa.table({"seq": seqs, "class": labels}), root / "records.tsv",
                    write_options=pacsv.WriteOptions(delimiter="\t"))
    out["tsv"] = (str(root / "records.tsv"), {"sequence_column": "seq", "label_column": "class"})
    (root / "parquet").mkdir()
    half = len(RECORDS) // 2
    pq.write_table(table.slice(0, half), root / "parquet" / "part-0.parquet")
    pq.write_table(table.slice(half), root / "parquet" / "part-1.parquet")
    out["parquet"] = (str(root / "parquet"), {"class_names": CLASSES})
    (root / "records.fa").write_text(fasta(RECORDS))
    out["fasta"] = (str(root / "records.fa"), {"class_names": CLASSES, "label_from": "header"})
    (root / "fastq").mkdir()
    for y, name in enumerate(CLASSES):
        text = fastq([r for r in RECORDS if r[2] == y])
        (root / "fastq" / f"{name}.fastq.gz").write_bytes(gzip.compress(text.encode()))
    out["fastq.gz"] = (str(root / "fastq"), {})
    for split, records in (("train", RECORDS), ("test", make_records(10, seed=1))):
        for y, name in enumerate(CLASSES):
            folder = root / "genomic_benchmarks" / split / name
            folder.mkdir(parents=True)
            (folder / "seqs.fa").write_text(fasta([r for r in records if r[2] == y], header_label=False))
    out["genomic_benchmarks"] = (str(root / "genomic_benchmarks"), {"split": "train"})
    write_bam(root / "reads.bam", RECORDS)
    out["bam"] = (str(root / "reads.bam"), {"class_names": CLASSES, "label_tag": "LB"})
    (root / "hf" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"seq": seqs, "label": pa.array(labels, pa.int64())}),
                   root / "hf" / "data" / "train-00000-of-00001.parquet")
    _test_ids, test_seqs, test_labels = zip(*make_records(10, seed=1))
    pq.write_table(pa.table({"seq": test_seqs, "label": test_labels}),
                   root / "hf" / "data" / "test-00000-of-00001.parquet")
    out["hf"] = (str(root / "hf"), {"format": "hf", "split": "train"})
    return out


# ---- round trips (Ray) -------------------------------------------------------------------------------------


def test_every_format_round_trips(ray_local, formats):
    for name, (uri, options) in formats.items():
        ds = read_sequences(uri, **options)
        rows = ds.take_all()
        assert digest(rows) == EXPECTED, name
        assert ds.schema().base_schema == SEQUENCE_SCHEMA, name
        if name in ("csv", "parquet", "fasta", "bam", "fastq.gz"):
            assert sorted(r["id"] for r in rows) == sorted(i for i, _, _ in RECORDS), name


def test_split_layouts_and_data_section(ray_local, formats):
    test_expected = digest({"sequence": s, "label": y} for _, s, y in make_records(10, seed=1))
    gb_uri, _ = formats["genomic_benchmarks"]
    assert digest(read_sequences(gb_uri, split="test").take_all()) == test_expected
    with pytest.raises(SourceError, match="holds several splits .*test, train"):
        read_sequences(gb_uri)
    with pytest.raises(SourceError, match="no 'validation' split"):
        read_sequences(gb_uri, split="validation")
    # A DataSection carries the options; keyword arguments override it.
    hf_uri, _ = formats["hf"]
    data = DataSection(format="hf", limit=7)
    assert len(read_sequences(hf_uri, data, split="test").take_all()) == 7
    assert digest(read_sequences(hf_uri, data, split="test", limit=100).take_all()) == test_expected


def test_s3_reads_equal_local(ray_local, s3_server, formats, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="raycad-data")
    for name in ("parquet", "fastq.gz", "bam", "hf"):
        local = Path(formats[name][0])
        files = [local] if local.is_file() else [p for p in local.rglob("*") if p.is_file()]
        for path in files:
            key = f"{name}/{path.relative_to(local.parent if local.is_file() else local)}"
            s3.upload_file(str(path), "raycad-data", key)
    for name in ("parquet", "fastq.gz", "bam", "hf"):
        uri, options = formats[name]
        key = f"s3://raycad-data/{name}" + ("/reads.bam" if name == "bam" else "")
        remote = read_sequences(key, s3_endpoint=s3_server, **options).take_all()
        local_rows = read_sequences(uri, **options).take_all()
        assert digest(remote) == digest(local_rows) == EXPECTED, name
    glob = read_sequences("s3://raycad-data/fastq.gz/*.fastq.gz", s3_endpoint=s3_server).take_all()
    assert digest(glob) == EXPECTED

    with pytest.raises(SourceError, match="bucket 'no-such-bucket' does not exist"):
        read_sequences("s3://no-such-bucket/x.csv", s3_endpoint=s3_server)
    with pytest.raises(SourceError, match="no such key or prefix in bucket 'raycad-data'"):
        read_sequences("s3://raycad-data/missing/x.csv", s3_endpoint=s3_server)


@pytest.fixture
def s3_server_with_auth():
    """A second moto_server that checks credentials (none exist there, so every request is denied)."""
    with run_moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as url:
        yield url


def test_wrong_credentials_error_is_clear_and_secret_free(s3_server_with_auth, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-value")
    with pytest.raises(SourceError, match=r"s3://private/data\.csv: access denied: the AWS credentials") as info:
        plan_sources("s3://private/data.csv", s3_endpoint=s3_server_with_auth, s3_region="us-east-1")
    assert "not-the-secret-value" not in str(info.value)


# ---- bad input on single files (no Ray) ------------------------------------------------------------------


class Counter:
    """A `SkipCounter` without Ray: the latest counts a read task reported."""

    def __init__(self):
        self.counts, self.examples, self.rna = {}, [], 0

    def update(self, source, counts, examples, part="", rna=0):
        self.counts, self.examples, self.rna = dict(counts), list(examples), rna


def read_file(path: Path, counter: Counter | None = None, **options) -> tuple[list[dict], dict[str, int]]:
    """Read one local file in-process; returns rows and skip counts (with bad_records="skip")."""
    plan = plan_sources(str(path), **options)
    counter = counter or Counter()
    rows = []
    for src in plan.files:
        for table in read_source_file(pafs.LocalFileSystem(), src, plan.options, counter):
            rows.extend(table.to_pylist())
    return rows, counter.counts


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_cleaning_whitespace_lower_case_and_invalid_policies(tmp_path):
    path = write(tmp_path, "x.csv", "sequence,label\n acg t ,0\nACRYT,1\n")
    rows, _ = read_file(path)
    assert [(r["sequence"], r["label"], r["id"]) for r in rows] == [("ACGT", 0, "x.csv:1"),
                                                                    ("ACRYT", 1, "x.csv:2")]
    rows, _ = read_file(path, invalid_chars="n")
    assert rows[1]["sequence"] == "ACNNT"
    with pytest.raises(SourceError, match=r"x\.csv: record 2: invalid characters: characters 'RY' outside"):
        read_file(path, invalid_chars="reject")
    rows, counts = read_file(path, invalid_chars="reject", bad_records="skip")
    assert len(rows) == 1 and counts == {"invalid_characters": 1}


@pytest.mark.parametrize("invalid_chars", ["unk", "n", "reject"])
def test_rna_is_read_as_dna_and_counted_in_every_invalid_chars_mode(tmp_path, invalid_chars):
    """U is read as T where records are cleaned, before ``invalid_chars`` looks at them (not [UNK], N or a
    rejected record); files and tables (`clean_block`) count the RNA records for the data report."""
    from raycad.data.sources.datasource import clean_block

    sequences = ["ACGU", "acgu u", "ACGT", "AUXU"]
    path = write(tmp_path, "rna.csv", "sequence,label\n" + "".join(f"{s},{i % 2}\n" for i, s in enumerate(sequences)))
    counter = Counter()
    rows, counts = read_file(path, counter, invalid_chars=invalid_chars, bad_records="skip")
    table = pa.table({"sequence": sequences, "label": [i % 2 for i in range(4)], "id": list("abcd")})
    from_table = Counter()
    out = clean_block(table, source="t", opts=ReadOptions(invalid_chars=invalid_chars, bad_records="skip"),
                      skips=from_table)
    x = {"unk": "X", "n": "N"}.get(invalid_chars)  # the one character that is not RNA
    expected = ["ACGT", "ACGTT", "ACGT"] + (["ATXT".replace("X", x)] if x else [])
    assert [r["sequence"] for r in rows] == out.column("sequence").to_pylist() == expected
    assert counts == from_table.counts == ({} if x else {"invalid_characters": 1})
    assert counter.rna == from_table.rna == (3 if x else 2)


@pytest.mark.parametrize("text, options, message", [
    ("sequence,label\nACGT,0\n,1\n", {}, r"record 2: empty sequence"),
    ("sequence,label\nACGT,0\nACGT,\n", {}, r"record 2: missing label"),
    ("sequence,label\nACGT,negative\nACGT,maybe\n", {"class_names": CLASSES},
     r"record 2: unknown label: 'maybe' is not a class \(known: negative, positive\)"),
    ("sequence,label\nACGT,0\nACGT,5\n", {"class_names": CLASSES},
     r"record 2: label out of range: label id 5 outside 0\.\.1"),
    ("sequence,label\nACGT,0\nACGT,-1\n", {}, r"record 2: label out of range"),
    ("sequence,label\nACGT,0\nACGT,1,extra\n", {}, r"malformed row: 3 columns instead of 2: .ACGT,1,extra."),
    ("seqs,label\nACGT,0\n", {}, r"no sequence column 'sequence' \(columns: seqs, label\)"),
])
def test_bad_table_records_raise_or_are_counted(tmp_path, text, options, message):
    path = write(tmp_path, "t.csv", text)
    with pytest.raises(SourceError, match=message) as info:
        read_file(path, **options)
    assert str(path) in str(info.value)
    if "column" not in message:
        rows, counts = read_file(path, bad_records="skip", **options)
        assert len(rows) == 1 and sum(counts.values()) == 1


def test_bad_fastx_records_raise_or_are_counted(tmp_path):
    good = "@a label=0\nACGT\n+\nIIII\n"
    path = write(tmp_path, "reads.fq", good + "@b label=1\nACGT\n+\nIII\n" + good.replace("@a", "@c"))
    with pytest.raises(SourceError, match=r"reads\.fq, record 2 \(id b\), line 8: sequence/quality length mismatch"):
        read_file(path)
    rows, counts = read_file(path, bad_records="skip")
    assert [r["id"] for r in rows] == ["a", "c"] and counts == {"malformed_record": 1}

    packed = gzip.compress((good * 3000).encode())
    path = write(tmp_path, "cut.fq.gz", packed[: len(packed) // 2])
    with pytest.raises(SourceError, match=r"cut\.fq\.gz: truncated gzip"):
        read_file(path)
    rows, counts = read_file(path, bad_records="skip")
    assert 0 < len(rows) < 3000 and counts == {"unreadable_file": 1}

    path = write(tmp_path, "tail.fq", good + "@b label=1\nACGT\n+\nII")
    with pytest.raises(SourceError, match=r"record 2 \(id b\).*truncated record"):
        read_file(path)
    path = write(tmp_path, "nolabel.fa", ">a label=1\nACGT\n>b\nACGT\n")
    with pytest.raises(SourceError, match=r"record 2 \(id b\): missing label: no 'label=' field in the header"):
        read_file(path, label_from="header")
    with pytest.raises(SourceError, match=r"unknown label: 'x'.*string labels need class_names"):
        read_file(write(tmp_path, "str.fa", ">a label=x\nACGT\n"))


def test_manifests_label_files_and_records(tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path, "d/one.fa", ">a\nACGT\n>b\nGGGG\n")
    write(tmp_path, "d/two.fa", ">c\nTTTT\n")
    write(tmp_path, "files.csv", "path,label\none.fa,healthy\ntwo.fa,tumour\n")
    rows, _ = read_file(tmp_path / "d", manifest=str(tmp_path / "files.csv"))
    assert sorted((r["id"], r["label"]) for r in rows) == [("a", 0), ("b", 0), ("c", 1)]
    write(tmp_path, "records.tsv", "id\tlabel\na\t1\nb\t0\n")
    with pytest.raises(SourceError, match=r"two\.fa: record 1 \(id c\): missing label: record id not in the manifest"):
        read_file(tmp_path / "d", manifest=str(tmp_path / "records.tsv"), label_from="manifest")
    rows, counts = read_file(tmp_path / "d", manifest=str(tmp_path / "records.tsv"), bad_records="skip")
    assert sorted((r["id"], r["label"]) for r in rows) == [("a", 1), ("b", 0)] and counts == {"missing_label": 1}


def test_records_from_tables_follow_the_file_contract(tmp_path):
    """The bundled demo and HealthOmics records (`clean_block`) are cleaned like a file's: the same bad record
    gives the same reason, the same message detail and the same skip count whichever way it arrives."""
    from raycad.data.records import RecordError
    from raycad.data.sources.datasource import clean_block

    rows = [(" acg t", "0"), ("", "1"), ("ACGT", ""), ("ACGT", "7"), ("AXGT", "1"), ("ACGT", "maybe"), ("GG", "pos")]
    path = write(tmp_path, "t.csv", "sequence,label,id\n" + "".join(f"{s},{lab},r{i}\n" for i, (s, lab) in
                                                                   enumerate(rows)))
    table = pa.table({"sequence": [s for s, _ in rows], "label": [lab for _, lab in rows],
                      "id": [f"r{i}" for i in range(len(rows))]})
    options = {"class_names": ("neg", "pos"), "invalid_chars": "reject"}
    file_rows, file_counts = read_file(path, bad_records="skip", **options)
    counter = Counter()
    out = clean_block(table, source="bundled:demo", opts=ReadOptions(bad_records="skip", **options), skips=counter)
    assert out.schema == SEQUENCE_SCHEMA and out.to_pylist() == file_rows
    assert [(r["sequence"], r["label"]) for r in file_rows] == [("ACGT", 0), ("GG", 1)]
    assert counter.counts == file_counts == {"empty_sequence": 1, "missing_label": 1, "label_out_of_range": 1,
                                             "invalid_characters": 1, "unknown_label": 1}
    assert counter.examples[0] == "bundled:demo: record 'r1': empty sequence: no bases"
    for bad in rows[1:6]:
        one = pa.table({"sequence": [bad[0]], "label": [bad[1]], "id": ["x"]})
        with pytest.raises(SourceError) as from_file:
            read_file(write(tmp_path, "one.csv", f"sequence,label,id\n{bad[0]},{bad[1]},x\n"), **options)
        with pytest.raises(RecordError) as from_table:
            clean_block(one, source="demo", opts=ReadOptions(**options), skips=None)
        assert from_table.value.reason == from_file.value.reason, bad
        assert str(from_table.value).split(": ", 2)[2] == str(from_file.value).split(": ", 2)[2], bad


def test_missing_paths_and_empty_matches(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.csv: no such file or directory"):
        plan_sources(str(tmp_path / "nope.csv"))
    with pytest.raises(SourceError, match="nothing matches"):
        plan_sources(str(tmp_path / "*.fa"))
    write(tmp_path, "README.md", "hello")
    with pytest.raises(SourceError, match="no sequence files found"):
        plan_sources(str(tmp_path))


# ---- errors and skip counts through Ray ------------------------------------------------------------------------


def test_ray_errors_name_the_record_and_skips_are_counted_once(ray_local, tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path, "d/a.csv", "sequence,label\nACGT,0\n,1\nACGT,7\nAC,1\n")
    write(tmp_path, "d/b.fq", "@x label=1\nACGT\n+\nIII\n@y label=0\nAC\n+\nII\n")
    with pytest.raises(SourceError, match=r"a\.csv: record 2: empty sequence"):
        read_sequences(str(tmp_path / "d" / "a.csv")).take_all()
    counter = SkipCounter()
    ds = read_sequences(str(tmp_path / "d"), class_names=["0", "1"], bad_records="skip", skips=counter)
    assert ds.count() == 3
    assert ds.count() == 3  # a second execution must not double the counts
    report = counter.report()
    assert report.by_reason == {"empty_sequence": 1, "label_out_of_range": 1, "malformed_record": 1}
    assert any("sequence/quality length mismatch" in e for e in report.examples)  # the detail is kept
    assert report.total == 3 and set(report.by_source) == {str(tmp_path / "d" / "a.csv"), str(tmp_path / "d" / "b.fq")}
    assert "3 records skipped" in str(report)


def test_hub_ids_download_through_snapshot_download(formats, monkeypatch):
    """A hub id goes through huggingface_hub.snapshot_download (faked here: nothing downloads in tests)."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("repo_type")))
        return formats["hf"][0]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    plan = plan_sources("katarinagresova/Genomic_Benchmarks_human_nontata_promoters", split="test")
    assert calls == [("katarinagresova/Genomic_Benchmarks_human_nontata_promoters", "dataset")]
    assert [f.relative for f in plan.files] == ["test-00000-of-00001.parquet"]
    plan_sources("hf://datasets/owner/name", split="train")
    assert calls[-1] == ("owner/name", "dataset")


def test_read_options_are_one_object_filled_from_the_config():
    """Every `ReadOptions` field a config section has flows from it by name; storage gives the S3 endpoint;
    keyword overrides win; unknown names and bad choices are refused."""
    from raycad.config import FinetuneConfig

    cfg = FinetuneConfig.from_dict({"data": {"format": "fasta", "label_from": "header", "class_names": ["a", "b"],
                                             "invalid_chars": "n", "bad_records": "skip", "limit": 7,
                                             "manifest": "m.csv", "label_tag": "RG"},
                                    "storage": {"endpoint": "http://127.0.0.1:9", "region": "eu-west-1"}})
    opts = read_options(cfg.data, cfg.storage, limit=3)
    shared = [name for name in OPTION_NAMES if name in type(cfg.data).model_fields]
    assert len(shared) == 11 and all(getattr(opts, n) == getattr(cfg.data, n) for n in shared if n not in
                                     ("class_names", "limit"))
    assert (opts.class_names, opts.limit, opts.s3_endpoint, opts.s3_region) == (("a", "b"), 3, "http://127.0.0.1:9",
                                                                                "eu-west-1")
    assert read_options(opts) == opts and read_options(opts, format=None).format == "fasta"
    with pytest.raises(TypeError, match="unknown read option.*colour"):
        read_options(cfg.data, colour="red")
    with pytest.raises(SourceError, match="bad_records='maybe' is not one of error, skip"):
        ReadOptions(bad_records="maybe")
