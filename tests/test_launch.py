"""raycad.launch without a cluster: cluster.yaml through Ray's own validation, the SageMaker request
against botocore's service model (Stubber) with the source upload on a real S3 endpoint (moto_server),
the SSH security group against the EC2 model, and the bootstrap's host discovery."""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import boto3
import botocore.session
import pytest
import yaml
from botocore.config import Config as BotoConfig
from botocore.stub import Stubber

from raycad.config import ConfigError
from raycad.launch import SageMakerConfig, create_ssh_security_group, launch_sagemaker, list_source_files
from raycad.launch.bootstrap import read_host_info
from raycad.launch.sagemaker import ALWAYS_EXCLUDED, BOOTSTRAP_PROGRAM, DEFAULT_IMAGE, build_source_tarball

REPO = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/raycad-sagemaker"


# ---- cluster.yaml --------------------------------------------------------------------------------------------


def test_cluster_yaml_passes_ray_validation_and_restricts_ssh():
    import ray
    from ray.autoscaler._private.aws.config import _configure_security_group
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (REPO / "cluster.yaml").read_text()
    config = prepare_config(yaml.safe_load(text))
    validate_config(config)

    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    dumped = json.dumps(config)
    assert "0.0.0.0/0" not in dumped and "::/0" not in dumped
    node_types = config["available_node_types"]
    for name, node in node_types.items():
        # A named group on every node type: Ray then creates none of its own (it would open SSH to 0.0.0.0/0).
        assert node["node_config"]["SecurityGroupIds"], name
        assert node["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name
    untouched = copy.deepcopy(config)
    assert _configure_security_group(untouched) == config  # returns before any AWS call, nothing added

    head = node_types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    gpu = [n for k, n in node_types.items() if k != config["head_node_type"]]
    assert len(gpu) == 1 and gpu[0]["node_config"]["InstanceType"].startswith("g5.")
    assert gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 1

    image = config["docker"]["image"]
    assert image == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert all(re.search(r"pip install .*raycad", " ".join(cmds)) for cmds in
               (config["head_setup_commands"], config["worker_setup_commands"]))
    assert any("raycad[cuda]" in cmd for cmd in config["worker_setup_commands"])


def test_clusters_install_the_tested_pinned_versions():
    """pyproject bounds torch (F.rms_norm: >= 2.4) and ray (the tested 2.60); cluster.yaml and SageMaker jobs
    install raycad with the same constraints.txt, whose pins fit pyproject and both images."""
    import ray
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    from raycad.launch.bootstrap import CONSTRAINTS_NAME, install_command

    pins = {}
    for line in (REPO / CONSTRAINTS_NAME).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    assert set(pins) == {"ray", "torch", "mamba-ssm", "causal-conv1d"}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = {r.name: r for r in map(Requirement, project["dependencies"] + project["optional-dependencies"]["cuda"])}
    for name, version in pins.items():
        assert Version(version) in requirements[name].specifier, (name, version, requirements[name])
    torch_spec, ray_spec = requirements["torch"].specifier, requirements["ray"].specifier
    assert Version("2.3.1") not in torch_spec and Version("2.4.0") in torch_spec
    assert Version(ray.__version__) in ray_spec  # the version the tests run on
    assert Version("2.59.0") not in ray_spec and Version("2.61.0") not in ray_spec

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert config["docker"]["image"].startswith(f"rayproject/ray:{pins['ray']}-")
    assert config["docker"]["head_image"].startswith(f"rayproject/ray:{pins['ray']}-")
    installs = [c for c in config["setup_commands"] + config["worker_setup_commands"] if "pip install" in c
                and "raycad" in c]
    assert len(installs) == 2
    assert all(re.search(rf"-c \S*raycad/{CONSTRAINTS_NAME}\b", c) for c in installs), installs
    assert f"pytorch-training:{pins['torch']}-gpu" in DEFAULT_IMAGE
    command = install_command(REPO, "cuda")
    assert command[-3:] == ["-c", str(REPO / CONSTRAINTS_NAME), f"{REPO}[cuda]"]
    assert CONSTRAINTS_NAME in list_source_files(REPO)  # shipped to the SageMaker hosts


def test_ssh_security_group_request_matches_ec2_model():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(ec2) as stub:
        stub.add_response("create_security_group", {"GroupId": "sg-0123456789abcdef0"})
        stub.add_response("authorize_security_group_ingress", {"Return": True}, {
            "GroupId": "sg-0123456789abcdef0",
            "IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                 "IpRanges": [{"CidrIp": "203.0.113.7/32", "Description": "SSH for ray up / ray attach"}]},
                {"IpProtocol": "-1",
                 "UserIdGroupPairs": [{"GroupId": "sg-0123456789abcdef0", "Description": "Ray intra-cluster"}]},
            ]})
        group = create_ssh_security_group(vpc_id="vpc-0abc", ssh_cidr="203.0.113.7/32", ec2_client=ec2)
        stub.assert_no_pending_responses()
    assert group == "sg-0123456789abcdef0"
    for cidr in ("0.0.0.0/0", "::/0", "0.0.0.0/1", "10.0.0.0/8", "2001:db8::/32", "not-a-cidr"):
        with pytest.raises(ConfigError):
            create_ssh_security_group(vpc_id="vpc-0abc", ssh_cidr=cidr, ec2_client=ec2)


def test_cluster_workers_have_their_own_least_privilege_profile_and_rsync_leaves_secrets_out():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]["node_config"]["IamInstanceProfile"]["Arn"]
    workers = [n["node_config"]["IamInstanceProfile"]["Arn"] for k, n in nodes.items() if k != config["head_node_type"]]
    assert workers and all(arn != head and arn.endswith("/raycad-worker") for arn in workers)

    def actions(name: str) -> dict[str, list]:
        policy = json.loads((REPO / "deploy" / "iam" / f"{name}-policy.json").read_text())
        out: dict[str, list] = {}
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for action in listed:
                out.setdefault(action, []).append(statement["Resource"])
        return out

    worker = actions("raycad-worker")
    # Workers run user code: no EC2, no IAM, no wildcards; S3 writes only under the checkpoint prefix.
    assert not [a for a in worker if a.startswith(("ec2:", "iam:")) or "*" in a]
    assert {"s3:GetObject", "s3:ListBucket", "omics:GetReadSet"} <= set(worker)
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert all(r.endswith("/raycad/*") for resources in worker[action] for r in resources
                   if r.endswith("*")), action
    head_actions = actions("raycad-head")
    assert "ec2:RunInstances" in head_actions
    assert head_actions["iam:PassRole"] == ["arn:aws:iam::123456789012:role/raycad-worker"]  # only the worker role
    # rsync to the nodes leaves out everything the SageMaker package does.
    assert set(ALWAYS_EXCLUDED) <= set(config["rsync_exclude"])


# ---- source package -------------------------------------------------------------------------------------------


PLANTED_SECRETS = (".aws/credentials", ".env", ".env.local", "deploy/id_rsa", "certs/server.pem", "notes/secret.key",
                   "credentials.json", "gcp-sa.json", "keys/my-service-account.json", ".s3cfg", ".boto",
                   "secrets.yaml", "infra/terraform.tfvars", "kubeconfig.yaml", "ops/.netrc", ".git-credentials")


def test_source_package_is_tracked_files_without_secrets(tmp_path):
    code = ["pyproject.toml", BOOTSTRAP_PROGRAM, "jobs/finetune.py"]
    for rel in (*code, *PLANTED_SECRETS, "raycad_runs/r/results.json", "raycad/__pycache__/x.pyc", "notes.txt",
                "configs/extra.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.parquet").write_bytes(b"\0" * (3 << 20))
    # Outside git: a plain walk, secrets and outputs left out whatever else is there.
    walked = list_source_files(tmp_path, exclude=["*.parquet"])
    assert set(walked) == {*code, "notes.txt", "configs/extra.yaml"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    # Secrets stay out even when someone committed them.
    subprocess.run(["git", "-C", str(tmp_path), "add", "-f", *code, *PLANTED_SECRETS], check=True)
    assert list_source_files(tmp_path) == sorted(code)  # untracked files (data, notes) are not packaged
    assert list_source_files(tmp_path, include=["configs/*.yaml", "*.key"]) == sorted([*code, "configs/extra.yaml"])
    with tarfile.open(fileobj=io.BytesIO(build_source_tarball(tmp_path, include=["configs/*"])), mode="r:gz") as tar:
        names = tar.getnames()
    assert sorted(names) == sorted([*code, "configs/extra.yaml"])
    with pytest.raises(ConfigError, match=r"3\.0 MB \(limit 1 MB; largest: data/big\.parquet \(3\.0 MB\)"):
        build_source_tarball(tmp_path, include=["data/*"], max_mb=1)


@pytest.mark.parametrize(("key", "value"), [("OPENAI_API_KEY", "x"), ("HF_TOKEN", "x"), ("MY_APIKEY", "x"),
                                            ("DB_URL", "postgres://user:hunter2@db:5432/x"),
                                            ("KEY_ID", "AKIAABCDEFGHIJKLMNOP")])
def test_secret_environment_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key}.*credential"):
        SageMakerConfig(role_arn=ROLE, output_path="s3://b/p").with_overrides({"environment": {key: value}})
    with pytest.raises(ConfigError, match="URL with a password"):
        SageMakerConfig.from_dict({"role_arn": ROLE, "output_path": "s3://b/p",
                                   "job_args": ["--set", "data.train=https://me:pw@example.org/x.csv"]})
    ok = SageMakerConfig(role_arn=ROLE, output_path="s3://b/p", environment={"GIT_AUTHOR_NAME": "me",
                                                                            "DATA_URL": "https://example.org/x"})
    assert ok.environment["GIT_AUTHOR_NAME"] == "me"


# ---- SageMaker --------------------------------------------------------------------------------------------------


def _check_patterns(shape, value, where="request"):
    """botocore validates types, lengths and required members; also check the model's regex patterns."""
    if shape.type_name == "structure":
        for name, member in value.items():
            _check_patterns(shape.members[name], member, f"{where}.{name}")
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            _check_patterns(shape.member, item, f"{where}[{i}]")
    elif shape.type_name == "map":
        for key, item in value.items():
            _check_patterns(shape.key, key, f"{where} key")
            _check_patterns(shape.value, item, f"{where}[{key}]")
    elif shape.type_name == "string" and "pattern" in shape.metadata:
        try:
            pattern = re.compile(shape.metadata["pattern"])
        except re.error:  # Java-only syntax such as \p{L}: botocore does not check those either
            return
        assert pattern.fullmatch(value), f"{where}={value!r} !~ {pattern.pattern}"


def _describe(status, secondary, message="", **extra):
    return {"TrainingJobName": "raycad-test-1", "TrainingJobArn": ARN, "TrainingJobStatus": status,
            "SecondaryStatus": secondary, "ModelArtifacts": {"S3ModelArtifacts": ""},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "CreationTime": "2026-01-01T00:00:00Z",
            "SecondaryStatusTransitions": [{"Status": secondary, "StartTime": "2026-01-01T00:00:00Z",
                                            "StatusMessage": message}], **extra}


ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/raycad-test-1"


@pytest.fixture
def s3_bucket(s3_server):
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      config=BotoConfig(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="raycad-launch-test")
    return s3


def test_launch_sagemaker_request_upload_and_polling(s3_bucket):
    cfg = SageMakerConfig.from_dict({
        "job": "finetune", "job_args": ["human_nontata_promoters", "--set", "train.epochs=2"],
        "role_arn": ROLE, "output_path": "s3://raycad-launch-test/runs", "job_name": "raycad-test-1",
        "region": "us-east-1", "instance_type": "ml.g5.12xlarge", "instance_count": 2,
        "max_runtime_s": 7200, "poll_interval_s": 0, "source_dir": str(REPO), "tags": {"project": "raycad"}})
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x",
                             aws_secret_access_key="x")
    code_uri = "s3://raycad-launch-test/runs/raycad-test-1/source/sourcedir.tar.gz"
    args = ("human_nontata_promoters --set train.epochs=2 --set run.output_dir=/opt/ml/model "
            "--set run.storage_path=s3://raycad-launch-test/runs/raycad-test-1/ray")
    expected = {
        "TrainingJobName": "raycad-test-1", "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": DEFAULT_IMAGE.format(region="us-east-1"),
                                   "TrainingInputMode": "File"},
        "HyperParameters": {"sagemaker_program": json.dumps(BOOTSTRAP_PROGRAM),
                            "sagemaker_submit_directory": json.dumps(code_uri),
                            "sagemaker_region": '"us-east-1"', "sagemaker_container_log_level": '"20"',
                            "raycad_job": '"finetune"', "raycad_args": json.dumps(args), "raycad_extras": '""'},
        "OutputDataConfig": {"S3OutputPath": "s3://raycad-launch-test/runs"},
        "ResourceConfig": {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "Environment": {"RAYCAD_LOG_LEVEL": "INFO", "RAY_USAGE_STATS_ENABLED": "0"},
        "EnableManagedSpotTraining": False,
        "Tags": [{"Key": "project", "Value": "raycad"}],
    }
    model = botocore.session.get_session().get_service_model("sagemaker")
    _check_patterns(model.operation_model("CreateTrainingJob").input_shape, expected)
    artifacts = "s3://raycad-launch-test/runs/raycad-test-1/output/model.tar.gz"
    with Stubber(sagemaker) as stub:
        stub.add_response("create_training_job", {"TrainingJobArn": ARN}, expected)
        stub.add_response("describe_training_job", _describe("InProgress", "Starting"),
                          {"TrainingJobName": "raycad-test-1"})
        stub.add_response("describe_training_job", _describe("InProgress", "Training", "Training in progress"),
                          {"TrainingJobName": "raycad-test-1"})
        stub.add_response("describe_training_job",
                          _describe("Completed", "Completed", ModelArtifacts={"S3ModelArtifacts": artifacts}),
                          {"TrainingJobName": "raycad-test-1"})
        result = launch_sagemaker(cfg, sagemaker_client=sagemaker, s3_client=s3_bucket)
        stub.assert_no_pending_responses()
    assert (result.status, result.model_artifacts, result.code_uri, result.ok) == ("Completed", artifacts,
                                                                                code_uri, True)

    body = s3_bucket.get_object(Bucket="raycad-launch-test", Key="runs/raycad-test-1/source/sourcedir.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(body["Body"].read()), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {BOOTSTRAP_PROGRAM, "jobs/finetune.py", "pyproject.toml", "raycad/config.py"} <= names
    assert not [n for n in names if n.startswith((".git/", ".aws", ".env")) or "__pycache__" in n]


def test_launch_sagemaker_reports_failure(s3_bucket):
    cfg = SageMakerConfig.from_dict({"role_arn": ROLE, "output_path": "s3://raycad-launch-test/fail",
                                     "job_name": "raycad-test-1", "region": "us-east-1", "poll_interval_s": 0,
                                     "source_dir": str(REPO)})
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x",
                             aws_secret_access_key="x")
    with Stubber(sagemaker) as stub:
        stub.add_response("create_training_job", {"TrainingJobArn": ARN})
        stub.add_response("describe_training_job",
                          _describe("Failed", "Failed", "AlgorithmError", FailureReason="AlgorithmError: exit 1"))
        result = launch_sagemaker(cfg, sagemaker_client=sagemaker, s3_client=s3_bucket)
    assert (result.status, result.failure_reason, result.ok) == ("Failed", "AlgorithmError: exit 1", False)


@pytest.mark.parametrize("job,args,added", [
    ("finetune", ["--output", "/x"], ["--set", "run.storage_path=s3://b/p/j/ray"]),
    ("tune", ["--tasks", "all", "--storage=s3://x"], ["--set", "output_dir=/opt/ml/model"]),
    ("tune", [], ["--set", "output_dir=/opt/ml/model", "--set", "storage_path=s3://b/p/j/ray"]),
    ("import_omics", ["--source", "demo"], []),
    ("pretrain", ["s3://b/genome.fa.gz"], ["--set", "run.output_dir=/opt/ml/model",
                                           "--set", "run.storage_path=s3://b/p/j/ray"]),
])
def test_sagemaker_job_outputs_default_to_model_dir_and_s3(job, args, added):
    from raycad.launch.sagemaker import job_arguments

    cfg = SageMakerConfig.from_dict({"role_arn": ROLE, "output_path": "s3://b/p/", "job": job, "job_args": args})
    assert job_arguments(cfg, "j") == args + added


def test_sagemaker_config_refuses_credentials_and_bad_values():
    base = {"role_arn": ROLE, "output_path": "s3://b/p"}
    for bad in ({"environment": {"AWS_SECRET_ACCESS_KEY": "x"}}, {"environment": {"HF_TOKEN": "x"}},
                {"job_args": ["--set", "x=AKIAABCDEFGHIJKLMNOP"]}, {"role_arn": "raycad"},
                {"output_path": "/local/dir"}, {"job_name": "has_underscore"}):
        with pytest.raises(ConfigError):
            SageMakerConfig.from_dict({**base, **bad})


def test_cli_builds_the_sagemaker_config(monkeypatch):
    import raycad.launch.sagemaker as sm
    from raycad.cli import main

    seen = {}

    def fake_launch(cfg):
        seen["cfg"] = cfg
        return sm.LaunchResult("j", "arn", "s3://b/c", "Failed")

    monkeypatch.setattr(sm, "launch_sagemaker", fake_launch)
    rc = main(["launch", "sagemaker", "--role-arn", ROLE, "--output-path", "s3://b/p", "--instance-count", "2",
               "--job", "tune", "--set", "extras=cuda", "--", "--tasks", "human_nontata_promoters"])
    cfg = seen["cfg"]
    assert rc == 1 and (cfg.job, cfg.instance_count, cfg.extras) == ("tune", 2, "cuda")
    assert cfg.job_args == ["--tasks", "human_nontata_promoters"]


# ---- bootstrap host discovery ---------------------------------------------------------------------------------


def test_bootstrap_reads_hosts_from_file_or_env(tmp_path):
    path = tmp_path / "resourceconfig.json"
    path.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"]}))
    info = read_host_info(path, env={})
    assert (info.head, info.is_head, info.hosts) == ("algo-1", False, ("algo-1", "algo-2"))
    env = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-1"}
    assert read_host_info(tmp_path / "missing.json", env=env).is_head
    with pytest.raises(ValueError, match="not among"):
        read_host_info(tmp_path / "missing.json", env={**env, "SM_CURRENT_HOST": "algo-9"})
    with pytest.raises(ValueError, match="no SageMaker host information"):
        read_host_info(tmp_path / "missing.json", env={})


def test_bootstrap_takes_toolkit_hyperparameters_and_finds_the_job(tmp_path):
    from raycad.launch.bootstrap import BootstrapOptions, _join_values, build_parser, job_command

    # The training toolkit passes each hyper-parameter as "--name value"; values may start with "--".
    argv = ["--raycad_args", "--set train.epochs=2 --tasks 'a b'", "--raycad_extras", "", "--raycad_job",
            "tune", "--sagemaker_param", "3"]
    args, unknown = build_parser().parse_known_args(_join_values(argv))
    assert (args.job, args.job_args, args.extras, unknown) == ("tune", "--set train.epochs=2 --tasks 'a b'", "",
                                                               ["--sagemaker_param", "3"])
    opts = BootstrapOptions(job="finetune", job_args=["--set", "x=1"], code_dir=REPO)
    assert job_command(opts)[1:] == [str(REPO / "jobs" / "finetune.py"), "--set", "x=1"]
    pretrain = BootstrapOptions(job="pretrain", job_args=["--max-steps", "5"], code_dir=REPO)
    assert job_command(pretrain)[1:] == [str(REPO / "jobs" / "pretrain.py"), "--max-steps", "5"]
    with pytest.raises(FileNotFoundError, match="nope.py"):
        job_command(BootstrapOptions(job="nope", job_args=[], code_dir=tmp_path))
