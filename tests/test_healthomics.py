"""Unit tests of raycad.data.healthomics: per-part FASTQ reading, URIs, and every omics request raycad makes,
checked by botocore's Stubber against the service model (request parameters and response shapes)."""

from __future__ import annotations

import gzip
import io
import random
from datetime import datetime, timezone

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from raycad.data.fastx import read_fastq
from raycad.data.healthomics import client as omics_clients
from raycad.data.healthomics.client import HealthOmicsError, OmicsConnection, omics_client
from raycad.data.healthomics.datasource import (
    HealthOmicsDatasource,
    ReadSetPart,
    _read_part,
    parse_healthomics_uri,
)
from raycad.data.healthomics.importer import (
    OmicsImportConfig,
    ReadSetEntry,
    _apply_job_result,
    existing_read_sets,
    resolve_store,
    start_imports,
    wait_for_import,
)
from raycad.data.healthomics.parts import ReadSetFormatError, iter_owned_fastq

STORE = "1234567890"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def stub(request):
    """A cached omics client (what raycad's code will pick up for this connection) under a Stubber."""
    conn = OmicsConnection(region="us-east-1", endpoint_url=f"https://{request.node.name.replace('_', '-')}.invalid")
    client = omics_client(conn)
    with Stubber(client) as stubber:
        yield conn, client, stubber
        stubber.assert_no_pending_responses()
    omics_clients._CLIENTS.pop(("omics", conn), None)


# ---- per-part reading ------------------------------------------------------------------------------------------


def _records(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        seq = "".join(rng.choice("ACGTN") for _ in range(rng.randint(1, 60)))
        qual = "".join(rng.choice("@+I#") for _ in seq)  # '@' and '+' in qualities stress the record finder
        out.append(f"@r{i} label={i % 3}\n{seq}\n+\n{qual}\n".encode())
    return out


def _encode(records: list[bytes], layout: str, rng: random.Random) -> bytes:
    text = b"".join(records)
    if layout == "plain":
        return text
    if layout == "single":
        return gzip.compress(text, mtime=0)
    if layout == "aligned":  # what raycad's importer writes: record-aligned members
        step = rng.randint(1, 3)
        return b"".join(gzip.compress(b"".join(records[i:i + step]), mtime=0) for i in range(0, len(records), step))
    out, i = b"", 0  # bgzip-like: members cut anywhere, mid-record
    while i < len(text):
        k = rng.randint(1, 400)
        out += gzip.compress(text[i:i + k], mtime=0)
        i += k
    return out


@pytest.mark.parametrize("layout", ["plain", "single", "aligned", "unaligned"])
def test_parts_own_every_record_exactly_once(layout):
    rng = random.Random(layout)
    for _ in range(60):
        records = _records(rng.randint(1, 150), rng)
        data = _encode(records, layout, rng)
        size = rng.randint(512, max(512, len(data) // 2))  # parts are MiBs in practice
        parts = [data[i:i + size] for i in range(0, len(data), size)]
        owned = [b"".join(iter_owned_fastq(parts.__getitem__, k, len(parts), chunk_bytes=256))
                 for k in range(len(parts))]
        assert b"".join(owned) == b"".join(records)
        if layout in ("plain", "aligned") and len(parts) > 2:
            assert sum(bool(o) for o in owned) > 1  # the work is spread over the parts
        ids = [r.id for chunk in owned for r in read_fastq(chunk)]
        assert ids == [f"r{i}" for i in range(len(records))]


def test_parts_reject_multiline_and_truncated_fastq():
    wrapped = b"@r1\nACGT\nACGT\n+\nIIII\nIIII\n"
    with pytest.raises(ReadSetFormatError, match="not four-line FASTQ"):
        list(iter_owned_fastq(lambda k: wrapped, 0, 1, where="read set 1"))
    truncated = gzip.compress(b"@r1\nACGT\n+\nIIII\n" * 100)[:-20]
    with pytest.raises(ReadSetFormatError, match="read set 1"):
        list(iter_owned_fastq(lambda k: truncated, 0, 1, where="read set 1"))


# ---- URIs ------------------------------------------------------------------------------------------------------


def test_parse_healthomics_uri():
    q = parse_healthomics_uri(f"healthomics://{STORE}?sampleId=positive&subjectId=demo:train&label=sample_id")
    assert (q.store_id, q.sample_id, q.subject_id, q.name) == (STORE, "positive", "demo:train", None)
    assert q.filters() == {"sampleId": "positive", "subjectId": "demo:train"} and q.options == {"label": "sample_id"}
    assert parse_healthomics_uri(f"healthomics://{STORE}/1111111111").read_set_ids == ("1111111111",)
    with pytest.raises(ValueError, match="unknown query keys"):
        parse_healthomics_uri(f"healthomics://{STORE}?sample=1")
    with pytest.raises(ValueError, match="must be digits"):
        parse_healthomics_uri("healthomics://my-store")


# ---- the datasource (Stubber) ----------------------------------------------------------------------------------


def _read_set_item(rs_id: str, name: str, sample: str, status: str = "ACTIVE") -> dict:
    return {"id": rs_id, "arn": f"arn:aws:omics:us-east-1:123456789012:sequenceStore/{STORE}/readSet/{rs_id}",
            "sequenceStoreId": STORE, "subjectId": "demo:train", "sampleId": sample, "status": status,
            "name": name, "fileType": "FASTQ", "creationTime": NOW}


def _metadata(rs_id: str, name: str, sample: str, parts: int) -> dict:
    item = _read_set_item(rs_id, name, sample)
    item["files"] = {"source1": {"totalParts": parts, "partSize": 100 << 20, "contentLength": parts * (100 << 20),
                                 "s3Access": {"s3Uri": f"s3://access-point/{rs_id}/source1.fastq.gz"}}}
    return item


def test_datasource_plans_one_read_task_per_part(stub):
    conn, _, stubber = stub
    query = parse_healthomics_uri(f"healthomics://{STORE}?subjectId=demo:train")
    filt = {"status": "ACTIVE", "subjectId": "demo:train"}
    stubber.add_response("list_read_sets", {"readSets": [_read_set_item("1000000001", "a", "negative")],
                                            "nextToken": "page2"},
                         {"sequenceStoreId": STORE, "filter": filt})
    stubber.add_response("list_read_sets", {"readSets": [_read_set_item("1000000002", "b", "positive")]},
                         {"sequenceStoreId": STORE, "filter": filt, "nextToken": "page2"})
    stubber.add_response("list_read_sets", {"readSets": []},
                         {"sequenceStoreId": STORE, "filter": {**filt, "status": "ARCHIVED"}})
    for rs_id, name, sample, parts in (("1000000001", "a", "negative", 3), ("1000000002", "b", "positive", 2)):
        stubber.add_response("get_read_set_metadata", _metadata(rs_id, name, sample, parts),
                             {"sequenceStoreId": STORE, "id": rs_id})
    source = HealthOmicsDatasource(query, label_policy="sample_id", class_names=["negative", "positive"],
                                   connection=conn)
    tasks = source.get_read_tasks(1)
    assert len(tasks) == 5
    plan = source.plan()
    assert [(p.read_set_id, p.part, p.num_parts, p.default_label) for p in plan] == [
        ("1000000001", 0, 3, 0), ("1000000001", 1, 3, 0), ("1000000001", 2, 3, 0),
        ("1000000002", 0, 2, 1), ("1000000002", 1, 2, 1)]
    assert tasks[4].metadata.input_files == (f"healthomics://{STORE}/1000000002?file=SOURCE1&part=2",)
    assert len(source.get_read_tasks(8)) == 5  # planned once: no further requests


def test_datasource_archived_and_missing_store_errors(stub):
    conn, _, stubber = stub
    query = parse_healthomics_uri(f"healthomics://{STORE}")
    stubber.add_response("list_read_sets", {"readSets": []}, {"sequenceStoreId": STORE, "filter": {"status": "ACTIVE"}})
    stubber.add_response("list_read_sets", {"readSets": [_read_set_item("1000000003", "old", "x", "ARCHIVED")]},
                         {"sequenceStoreId": STORE, "filter": {"status": "ARCHIVED"}})
    with pytest.raises(HealthOmicsError, match="ARCHIVED.*1000000003 \\(old\\).*start_read_set_activation_job"):
        HealthOmicsDatasource(query, connection=conn).plan()
    stubber.add_client_error("list_read_sets", "ResourceNotFoundException", "Sequence store not found",
                             http_status_code=404)
    with pytest.raises(HealthOmicsError, match="ResourceNotFoundException.*check the id and the region"):
        HealthOmicsDatasource(query, connection=conn).plan()
    stubber.add_client_error("list_read_sets", "AccessDeniedException", "not authorized", http_status_code=403)
    with pytest.raises(HealthOmicsError, match="AccessDeniedException.*lacks permission"):
        HealthOmicsDatasource(query, connection=conn).plan()


def test_read_task_fetches_parts_with_get_read_set(stub):
    conn, _, stubber = stub
    records = _records(40, random.Random(1))
    data = b"".join(gzip.compress(b"".join(records[i:i + 5]), mtime=0) for i in range(0, 40, 5))
    size = len(data) // 2 + 1
    parts = [data[:size], data[size:]]
    spec = ReadSetPart(STORE, "1000000001", "a", "SOURCE1", 0, 2, size, len(data), None, None)
    rows = []
    for k, expected_parts in ((0, (1, 2)), (1, (2,))):  # part 1's last member runs into part 2
        for number in expected_parts:
            body = StreamingBody(io.BytesIO(parts[number - 1]), len(parts[number - 1]))
            stubber.add_response("get_read_set", {"payload": body},
                                 {"sequenceStoreId": STORE, "id": "1000000001", "file": "SOURCE1",
                                  "partNumber": number})
        part = ReadSetPart(**{**spec.__dict__, "part": k})
        for table in _read_part(part, conn, "auto", "api"):
            rows += table.to_pylist()
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(40)]
    assert [r["label"] for r in rows] == [i % 3 for i in range(40)]


# ---- the importer (Stubber) ------------------------------------------------------------------------------------


def _cfg(**overrides) -> OmicsImportConfig:
    return OmicsImportConfig(**{"store": "my-store", "role_arn": "arn:aws:iam::123456789012:role/omics-import",
                                "staging_uri": "s3://bucket/prefix", "waiter_delay": 0.01,
                                "store_wait_delay": 0.01, **overrides})


def test_store_is_created_by_name_and_waited_for(stub):
    _, client, stubber = stub
    store = {"id": STORE, "arn": f"arn:aws:omics:us-east-1:123456789012:sequenceStore/{STORE}", "name": "my-store",
             "creationTime": NOW}
    stubber.add_response("list_sequence_stores", {"sequenceStores": []}, {"filter": {"name": "my-store"}})
    stubber.add_response("create_sequence_store", {**store, "status": "CREATING"},
                         {"name": "my-store", "description": "raycad: DNA sequences for Caduceus",
                          "clientToken": ANY})
    stubber.add_response("get_sequence_store", {**store, "status": "ACTIVE"}, {"id": STORE})
    assert resolve_store(client, _cfg()) == (STORE, "my-store")
    stubber.add_response("get_sequence_store", {**store, "status": "ACTIVE"}, {"id": STORE})
    assert resolve_store(client, _cfg(store=STORE)) == (STORE, "my-store")
    stubber.add_client_error("get_sequence_store", "ResourceNotFoundException", "no such store", 404)
    with pytest.raises(HealthOmicsError, match=f"sequence store {STORE} not found"):
        resolve_store(client, _cfg(store=STORE))


def test_existing_read_sets_are_matched_by_name(stub):
    _, client, stubber = stub
    items = [_read_set_item("1000000001", "keep", "negative"), _read_set_item("1000000002", "gone", "negative",
                                                                              "UPLOAD_FAILED")]
    stubber.add_response("list_read_sets", {"readSets": items},
                         {"sequenceStoreId": STORE, "filter": {"subjectId": "demo:train"}})
    assert list(existing_read_sets(client, STORE, {"demo:train"})) == ["keep"]


def _entries(n: int) -> list[ReadSetEntry]:
    return [ReadSetEntry(name=f"raycad-demo-train-negative-{i:03d}-abc", task="demo", split="train",
                         class_name="negative", label=0, shard=i, records=10, bases=2510, sha256="ab" * 32)
            for i in range(n)]


def test_imports_start_in_batches_of_at_most_100_fastq_sources(stub):
    _, client, stubber = stub
    entries = _entries(150)
    uris = {e.name: f"s3://bucket/prefix/{e.name}.fastq.gz" for e in entries}
    for job_id, batch in (("2000000001", entries[:100]), ("2000000002", entries[100:])):
        sources = [{"sourceFiles": {"source1": uris[e.name]}, "sourceFileType": "FASTQ", "subjectId": "demo:train",
                    "sampleId": "negative", "name": e.name, "description": ANY, "tags": ANY} for e in batch]
        stubber.add_response("start_read_set_import_job",
                             {"id": job_id, "sequenceStoreId": STORE, "roleArn": _cfg().role_arn,
                              "status": "SUBMITTED", "creationTime": NOW},
                             {"sequenceStoreId": STORE, "roleArn": _cfg().role_arn, "clientToken": ANY,
                              "sources": sources})
    jobs = start_imports(client, _cfg(), STORE, entries, uris)
    assert [(job_id, len(batch)) for job_id, batch in jobs] == [("2000000001", 100), ("2000000002", 50)]
    assert entries[0].import_job_id == "2000000001" and entries[-1].import_job_id == "2000000002"


def _job(status: str, sources: list[dict]) -> dict:
    return {"id": "2000000001", "sequenceStoreId": STORE, "roleArn": _cfg().role_arn, "status": status,
            "creationTime": NOW, "sources": sources}


def _source(name: str, status: str, **extra) -> dict:
    return {"sourceFiles": {"source1": f"s3://bucket/prefix/{name}.fastq.gz"}, "sourceFileType": "FASTQ",
            "status": status, "subjectId": "demo:train", "sampleId": "negative", "name": name, **extra}


def test_waiter_reports_failed_sources_with_their_status_message(stub):
    _, client, stubber = stub
    entries = _entries(2)
    names = [e.name for e in entries]
    params = {"sequenceStoreId": STORE, "id": "2000000001"}
    stubber.add_response("get_read_set_import_job", _job("IN_PROGRESS", [_source(n, "IN_PROGRESS") for n in names]),
                         params)
    final = _job("COMPLETED_WITH_FAILURES", [
        _source(names[0], "FINISHED", readSetId="1000000009"),
        _source(names[1], "FAILED", statusMessage="Invalid FASTQ: quality length mismatch at line 8")])
    stubber.add_response("get_read_set_import_job", final, params)
    job = wait_for_import(client, _cfg(), STORE, "2000000001")
    _apply_job_result(job, entries)
    assert (entries[0].status, entries[0].read_set_id) == ("imported", "1000000009")
    assert entries[1].status == "failed" and "quality length mismatch" in entries[1].message


def test_waiter_gives_up_after_max_attempts(stub):
    _, client, stubber = stub
    for _ in range(2):
        stubber.add_response("get_read_set_import_job", _job("IN_PROGRESS", []),
                             {"sequenceStoreId": STORE, "id": "2000000001"})
    with pytest.raises(HealthOmicsError, match="still IN_PROGRESS after 2 polls"):
        wait_for_import(client, _cfg(waiter_max_attempts=2), STORE, "2000000001")


def test_client_uses_adaptive_retries_and_no_host_prefix_with_custom_endpoint():
    local = omics_client(OmicsConnection(region="us-east-1", endpoint_url="http://127.0.0.1:1"), cached=False)
    aws = omics_client(OmicsConnection(region="us-east-1"), cached=False)
    assert local.meta.config.retries["mode"] == "adaptive"
    assert local.meta.config.inject_host_prefix is False and aws.meta.config.inject_host_prefix is True
