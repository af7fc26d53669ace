"""raycad.storage against a real S3 endpoint (moto_server): the config's ``storage`` section reaches data
reads, Ray Train checkpoint storage, Tune sweep storage and published outputs alike."""

from __future__ import annotations

import boto3
import pyarrow.fs
import pytest
from botocore.config import Config as BotoConfig

from raycad.config import ConfigError, FinetuneConfig, PretrainConfig

BUCKET = "raycad-storage-test"


@pytest.fixture(scope="module")
def bucket(s3_server):
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      config=BotoConfig(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=BUCKET)
    return s3


def _keys(s3, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_older_data_s3_keys_are_the_storage_section():
    old = FinetuneConfig.from_dict({"data": {"s3_endpoint": "http://127.0.0.1:9", "s3_region": "eu-west-1"}})
    assert (old.storage.endpoint, old.storage.region) == ("http://127.0.0.1:9", "eu-west-1")
    assert "s3_endpoint" not in old.to_dict()["data"]
    assert FinetuneConfig.from_dict(old.to_dict()) == old  # saved configs round-trip in the new spelling
    assert old.with_overrides(["data.s3_region=us-east-2"]).storage.region == "us-east-2"
    assert PretrainConfig.load(overrides=["data.s3_endpoint=http://h:1"]).storage.endpoint == "http://h:1"
    with pytest.raises(ConfigError, match="s3_bucket"):  # other unknown keys stay errors
        FinetuneConfig.from_dict({"data": {"s3_endpoint": "http://a:1", "s3_bucket": "b"}})


def test_checkpoint_storage_honours_the_endpoint(bucket, s3_server, tmp_path, monkeypatch):
    """Ray Train's storage, as `make_torch_trainer` sets it from the config (no Ray started)."""
    import ray

    from raycad.train.trainer import make_torch_trainer

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})

    def storage(cfg):
        run = make_torch_trainer(cfg, lambda config: None, {}, {}, name="run").run_config
        return run.storage_path, run.storage_filesystem

    cfg = FinetuneConfig.from_dict({"run": {"storage_path": f"s3://{BUCKET}/ckpt"},
                                    "storage": {"endpoint": s3_server, "region": "us-east-1"}})
    path, fs = storage(cfg)
    assert path == f"{BUCKET}/ckpt"
    (tmp_path / "checkpoint_000000").mkdir()
    (tmp_path / "checkpoint_000000" / "state.bin").write_bytes(b"weights")
    pyarrow.fs.copy_files(str(tmp_path / "checkpoint_000000"), f"{path}/run/checkpoint_000000",  # as Ray Train
                          source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    assert _keys(bucket, "ckpt/") == ["ckpt/run/checkpoint_000000/state.bin"]
    local = FinetuneConfig.from_dict({"run": {"output_dir": str(tmp_path)}})
    assert storage(local) == (str(tmp_path / "run" / "ray"), None)
    with pytest.raises(ConfigError, match="only local paths and s3://"):
        storage(cfg.with_overrides(["run.storage_path=gs://x/y"]))


def test_sweep_storage_honours_the_base_endpoint(bucket, s3_server, tmp_path):
    """Tune's storage, as `tune_run_config` hands it to the Tuner (no Ray started): the base config's storage
    section reaches the experiments' filesystem, and trials get a URI under the same root."""
    from raycad.tune.sweep import SweepConfig, tune_run_config

    cfg = SweepConfig.from_dict({"name": "sw", "storage_path": f"s3://{BUCKET}/tune",
                                 "base": {"storage": {"endpoint": s3_server, "region": "us-east-1"}}})
    run, trials = tune_run_config(cfg, "demo", tmp_path, max_failures=2)
    assert (run.name, run.storage_path, run.failure_config.max_failures) == ("demo", f"{BUCKET}/tune/sw/tune", 2)
    assert trials == f"s3://{BUCKET}/tune/sw/train/demo"
    (tmp_path / "f").write_text("1")
    pyarrow.fs.copy_files(str(tmp_path / "f"), f"{run.storage_path}/demo/experiment_state.json",  # as Tune
                          source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=run.storage_filesystem)
    assert _keys(bucket, "tune/") == ["tune/sw/tune/demo/experiment_state.json"]
    run, trials = tune_run_config(SweepConfig.from_dict({"name": "sw"}), "demo", tmp_path)
    assert (run.storage_path, run.storage_filesystem, trials) == (str(tmp_path / "ray" / "tune"), None,
                                                                 str(tmp_path / "ray" / "train" / "demo"))


def test_s3_uris_split_in_one_place():
    from raycad.storage import StorageError, filesystem, split_s3

    assert split_s3("s3://bucket/some/key/") == ("bucket", "some/key")
    with pytest.raises(ConfigError, match=r"staging_uri must be s3://bucket/prefix, got 'bucket/x'"):
        split_s3("bucket/x", "staging_uri")
    with pytest.raises(StorageError, match="unsupported URI scheme in 'gs://b/k'"):
        filesystem("gs://b/k")

    class Named(ValueError):
        pass

    with pytest.raises(Named, match="unsupported URI scheme"):  # the data readers raise their own SourceError
        filesystem("gs://b/k", error=Named)


def test_publish_run_copies_outputs_next_to_checkpoints(bucket, s3_server, tmp_path):
    from raycad.storage import publish_run

    run_dir = tmp_path / "demo-run"
    for rel in ("results.json", "metrics.csv", "model/config.json", "ray/demo-run/checkpoint_0/state.bin"):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(rel)
    cfg = FinetuneConfig.from_dict({"run": {"storage_path": f"s3://{BUCKET}/storage"},
                                    "storage": {"endpoint": s3_server, "region": "us-east-1"}})
    assert len(publish_run(cfg, run_dir)) == 3
    assert _keys(bucket, "storage/") == ["storage/demo-run/metrics.csv", "storage/demo-run/model/config.json",
                                         "storage/demo-run/results.json"]
    body = bucket.get_object(Bucket=BUCKET, Key="storage/demo-run/results.json")["Body"].read()
    assert body == b"results.json"
    assert publish_run(FinetuneConfig(), run_dir) == []  # local storage: outputs already are in place
