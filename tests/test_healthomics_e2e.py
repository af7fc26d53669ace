"""End to end over HTTP: the real boto3 omics client against the loopback stand-in (tests/omics_standin.py),
with moto_server as the S3 behind it; Ray Data streams the imported read sets back part by part."""

from __future__ import annotations

import hashlib
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest
from omics_standin import OmicsStandIn

from raycad.data.healthomics import (
    HealthOmicsError,
    OmicsImportConfig,
    import_to_sequence_store,
    read_healthomics,
)
from raycad.data.loader import BUNDLED_DEMO


@pytest.fixture(scope="module")
def omics(s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="staging")
    standin = OmicsStandIn(s3_server, part_size=96 << 10).start()
    yield standin
    standin.stop()


def _config(omics, s3_server, tmp_path, **overrides) -> OmicsImportConfig:
    fields = {"store": "raycad-test", "role_arn": "arn:aws:iam::123456789012:role/omics-import",
              "staging_uri": "s3://staging/raycad", "endpoint_url": omics.url, "s3_endpoint_url": s3_server,
              "region": "us-east-1", "waiter_delay": 0.05, "waiter_max_attempts": 50, "store_wait_delay": 0.05,
              "gzip_member_bytes": 64 << 10, "manifest": str(tmp_path / "manifest.json")}
    return OmicsImportConfig(**{**fields, **overrides})


def _digest(rows) -> tuple[int, str]:
    """Count and order-independent hash of (id, sequence, label) rows."""
    lines = sorted(f"{r[0]}\t{r[1]}\t{int(r[2])}" for r in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.fixture(scope="module")
def imported(omics, s3_server, tmp_path_factory):
    cfg = _config(omics, s3_server, tmp_path_factory.mktemp("omics"))
    result = import_to_sequence_store(cfg)
    return cfg, result


def test_import_writes_manifest_and_read_sets(imported, omics):
    _cfg, result = imported
    assert result.ok and len(result.imported) == 6 and not result.existing  # 3 splits x 2 classes
    assert omics.calls["StartReadSetImportJob"] == 1 and omics.calls["CreateSequenceStore"] == 1
    source = pq.read_table(BUNDLED_DEMO).to_pandas()
    expected = Counter(zip(source["split"].astype(str), source["label"].astype(int)))
    assert {(e.split, e.label): e.records for e in result.entries} == dict(expected)
    manifest = result.manifest_path.read_text()
    assert "role" not in manifest.lower() and "testing" not in manifest and omics.url not in manifest
    read_sets = omics.read_sets.values()
    assert {r.sample_id for r in read_sets} == {"negative", "positive"}
    assert {r.subject_id for r in read_sets} == {f"human_nontata_promoters:{s}" for s in ("train", "validation",
                                                                                         "test")}
    assert all(r.tags["raycad:label"] in ("0", "1") for r in read_sets)


def test_stream_round_trips_every_sequence_and_label(imported, omics, s3_server, ray_local):
    _cfg, result = imported
    source = pq.read_table(BUNDLED_DEMO, columns=["id", "sequence", "label"]).to_pydict()
    expected = _digest(zip(source["id"], source["sequence"], source["label"]))

    ds = read_healthomics(f"healthomics://{result.store_id}", endpoint_url=omics.url, region="us-east-1")
    gets_before = omics.calls.get("GetReadSet", 0)
    start = time.perf_counter()
    rows = ds.to_pandas()
    seconds = time.perf_counter() - start
    assert _digest(zip(rows["id"], rows["sequence"], rows["label"])) == expected
    assert rows["id"].is_unique
    parts = sum(-(-len(r.data) // omics.part_size) for r in omics.read_sets.values())
    assert parts > 6  # several parts per read set: parallel streaming is exercised
    assert omics.calls["GetReadSet"] - gets_before >= parts  # every part fetched, by the read tasks
    stats = ds.stats()
    assert f"{parts} tasks executed" in stats, stats
    print(f"\nstreamed {len(rows)} sequences from {parts} read-set parts in {seconds:.2f} s "
          f"({len(rows) / seconds:,.0f} sequences/s, stand-in over HTTP, 2 CPUs)")


def test_stream_one_split_by_subject_with_sample_labels_and_s3_path(imported, omics, s3_server, ray_local):
    _cfg, result = imported
    source = pq.read_table(BUNDLED_DEMO).to_pandas()
    test = source[source["split"].astype(str) == "test"]
    expected = _digest(zip(test["id"], test["sequence"], test["label"]))
    ds = read_healthomics(result.uri("test"), label_policy="sample_id", class_names=["negative", "positive"],
                          read_path="s3", endpoint_url=omics.url, s3_endpoint_url=s3_server, region="us-east-1")
    rows = ds.to_pandas()
    assert _digest(zip(rows["id"], rows["sequence"], rows["label"])) == expected


def test_second_import_is_a_no_op(imported, omics, s3_server, tmp_path):
    cfg, first = imported
    jobs = omics.calls["StartReadSetImportJob"]
    again = import_to_sequence_store(cfg.with_overrides({"manifest": str(tmp_path / "again.json")}))
    assert again.ok and not again.imported and len(again.existing) == 6
    assert omics.calls["StartReadSetImportJob"] == jobs
    assert {e.read_set_id for e in again.entries} == {e.read_set_id for e in first.entries}


def test_archived_read_sets_are_a_clear_error(imported, omics, ray_local):
    _cfg, result = imported
    victim = result.entries[0].read_set_id
    omics.set_status(victim, "ARCHIVED")
    try:
        with pytest.raises(HealthOmicsError, match=f"ARCHIVED.*{victim}"):
            read_healthomics(f"healthomics://{result.store_id}", endpoint_url=omics.url,
                             region="us-east-1").count()
    finally:
        omics.set_status(victim, "ACTIVE")


def test_failed_sources_are_reported_and_the_cli_exits_nonzero(omics, s3_server, tmp_path, capsys):
    import argparse

    from raycad.data.healthomics.cli import add_commands

    parser = argparse.ArgumentParser(prog="raycad")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["omics", "import", "--store", "raycad-test", "--role-arn",
                 "arn:aws:iam::123456789012:role/no-s3-access", "--staging", "s3://staging/bad",
                 "--endpoint-url", omics.url, "--s3-endpoint-url", s3_server, "--region", "us-east-1",
                 "--waiter-delay", "0.05", "--manifest", str(tmp_path / "bad.json"),
                 "--set", "name_prefix=bad", "--set", "splits=[test]", "--set", "store_wait_delay=0.05"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "FAILED bad-human_nontata_promoters-test-negative" in err and "Access denied: the role cannot read s3://staging/bad/" in err


def test_store_not_found_and_access_denied(omics, s3_server, tmp_path, monkeypatch):
    with pytest.raises(HealthOmicsError, match="sequence store 9999999999 not found"):
        import_to_sequence_store(_config(omics, s3_server, tmp_path, store="9999999999"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "denied")
    omics.denied_keys.add("denied")
    with pytest.raises(HealthOmicsError, match="AccessDeniedException.*lacks permission"):
        import_to_sequence_store(_config(omics, s3_server, tmp_path, store="raycad-other", max_attempts=1))


@pytest.mark.slow
def test_finetune_streams_read_sets_from_healthomics(imported, omics, tmp_path, ray_local, monkeypatch):
    """data.train/validation/test as healthomics:// URIs, read through raycad.data.read_sequences."""
    from raycad.config import FinetuneConfig
    from raycad.train import finetune

    _cfg, result = imported
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", omics.url)  # the standard AWS variable; resolved on the driver
    gets = omics.calls.get("GetReadSet", 0)
    cfg = FinetuneConfig.from_dict({
        "model": {"preset": "caduceus-ps-1k-d118-l4", "overrides": {"d_model": 32, "n_layer": 2}},
        # Read sets hold one class each and stream in order, so `data.limit` would keep one class only (which
        # finetune refuses); the smaller validation read sets (904 records) stand in for the training split.
        "data": {"train": result.uri("validation"), "validation": result.uri("test"), "test": result.uri("test"),
                 "class_names": result.class_names},
        "train": {"epochs": 1, "batch_size": 32, "eval_batch_size": 128},
        "scaling": {"num_workers": 1},
        "run": {"output_dir": str(tmp_path), "name": "omics-e2e", "export_model": False},
    })
    run = finetune(cfg, show=False)
    assert run.history and run.history[-1]["epoch"] == 1
    assert 0.0 <= run.test_metrics["test_accuracy" if "test_accuracy" in run.test_metrics else "accuracy"] <= 1.0
    assert omics.calls["GetReadSet"] > gets  # the sequences really came from the stand-in
