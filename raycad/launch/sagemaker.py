"""Run a raycad job as a SageMaker training job: one Ray cluster across the job's GPU instances.

`launch_sagemaker` packages the checkout (git-tracked files, plus the files an explicit ``include`` list names;
never anything that looks like a credential: ``.aws``, ``.env``, keys, service-account JSON, ``.s3cfg``,
``terraform.tfvars``, kubeconfigs ...; at most `max_package_mb`) into ``sourcedir.tar.gz`` on S3 and calls
``create_training_job`` with an AWS PyTorch/CUDA training image. The image's training toolkit unpacks the
tarball into ``/opt/ml/code`` on every host and runs `raycad.launch.bootstrap` there, which installs raycad,
forms the Ray cluster and runs ``jobs/<job>.py`` with the given arguments on the head. The launcher then
follows ``describe_training_job`` until the job ends and prints where its outputs are.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import shlex
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from raycad import storage
from raycad.config import Config, ConfigError
from raycad.runtime import console, get_logger

log = get_logger("raycad.launch.sagemaker")

DEFAULT_IMAGE = "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-training:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
"""AWS Deep Learning Container for PyTorch training (CUDA 12.4, Python 3.11) in the job's region."""
BOOTSTRAP_PROGRAM = "raycad/launch/bootstrap.py"
MODEL_DIR = "/opt/ml/model"
TERMINAL = ("Completed", "Failed", "Stopped")

ALWAYS_EXCLUDED = (
    ".git", ".aws", ".ssh", ".gnupg", ".docker", ".kube", ".azure", ".config/gcloud", ".gcloud",
    ".env", ".env.*", "*.env", ".envrc", ".netrc", ".pypirc", ".npmrc", ".git-credentials", ".s3cfg", ".boto",
    ".pgpass", ".htpasswd", "credentials", "credentials.*", "*credentials*.json", "*-credentials.*",
    "gcp-sa*.json", "*service-account*.json", "*service_account*.json", "client_secret*.json",
    "secret", "secrets", "secret.*", "secrets.*", "*.secret", "*.secrets",
    "*.tfvars", "*.tfvars.json", "*.tfstate", "*.tfstate.*", "kubeconfig", "kubeconfig*.yaml", "kubeconfig*.yml",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ovpn", "id_rsa*", "id_ed25519*", "id_ecdsa*",
    "id_dsa*", "*.kdbx",
    "__pycache__", "*.pyc", ".venv", "venv", ".pytest_cache", ".ruff_cache", ".mypy_cache", "*.egg-info",
    "raycad_runs", "raycad_sweeps", "build", "dist", ".ipynb_checkpoints",
)
"""Names (matched against every path component) and relative-path patterns never put in the package (nor
synced to cluster nodes: `cluster.yaml`'s ``rsync_exclude`` lists the same patterns)."""

DEFAULT_MAX_PACKAGE_MB = 20.0

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|SESSION_KEY|API_?KEY"
                          r"|AUTH(?!OR)|_PAT$|DSN$", re.IGNORECASE)
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
"""A URL with a password in it (``scheme://user:password@host``)."""


def secret_in_value(value: str) -> str | None:
    """What in ``value`` looks like a secret (an AWS key id, a URL with a password), or None."""
    if _AWS_KEY_ID.search(value):
        return "an AWS access key id"
    if _URL_PASSWORD.search(value):
        return "a URL with a password"
    return None


class SageMakerConfig(Config):
    """A SageMaker training job that runs one raycad job (`job` with `job_args`) on a Ray cluster."""

    job: Literal["finetune", "pretrain", "tune", "import_omics"] = "finetune"
    job_args: list[str] = Field(default_factory=list)
    """Arguments of ``jobs/<job>.py`` (the same as ``raycad <job> ...``), e.g. ["--set", "train.epochs=5"]."""
    role_arn: str = Field(..., pattern=r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
    """Execution role: S3 read/write on the code and output prefixes (and HealthOmics when used)."""
    output_path: str = Field(..., pattern=r"^s3://[^/]+(/.*)?$")
    """S3 prefix for job outputs: <output_path>/<job_name>/output/model.tar.gz, Ray storage, the source."""
    job_name: str | None = Field(None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    """None = raycad-<job>-<UTC timestamp>."""
    region: str | None = None
    """None = the AWS default region of the environment."""
    image_uri: str | None = None
    """Training image; None = `DEFAULT_IMAGE` in `region`."""
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = Field(1, ge=1)
    volume_size_gb: int = Field(100, ge=1)
    max_runtime_s: int = Field(24 * 3600, ge=60)
    use_spot: bool = False
    max_wait_s: int | None = Field(None, ge=60)
    """Spot only: the longest the job may wait for capacity plus run (>= max_runtime_s)."""
    extras: str = ""
    """pip extras installed with raycad in the container, e.g. "cuda" for the mamba-ssm kernels."""
    source_dir: str = "."
    include: list[str] = Field(default_factory=list)
    """Glob patterns of files to package besides the git-tracked ones (e.g. ``["configs/*.yaml"]``); secrets
    (`ALWAYS_EXCLUDED`) stay out whatever they match."""
    exclude: list[str] = Field(default_factory=list)
    """Extra glob patterns left out of the source package (on top of `ALWAYS_EXCLUDED`)."""
    max_package_mb: float = Field(DEFAULT_MAX_PACKAGE_MB, gt=0)
    """Refuse to upload a source package larger than this (data belongs on S3, not in the code package)."""
    environment: dict[str, str] = Field(default_factory=dict)
    """Extra container environment variables. Names that look like secrets are refused: use the role."""
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    wait: bool = True
    """Follow the job until it ends (and exit non-zero unless it completed)."""
    poll_interval_s: float = Field(30.0, ge=0)
    s3_endpoint_url: str | None = None
    sagemaker_endpoint_url: str | None = None

    @field_validator("environment")
    @classmethod
    def _no_secrets(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            found = "its name" if _SECRET_NAME.search(key) else secret_in_value(value)
            if found:
                raise ValueError(f"environment variable {key!r} looks like a credential ({found}); the job gets "
                                 "AWS access from its role_arn and must not carry secrets")
        return env

    @field_validator("job_args")
    @classmethod
    def _no_keys_in_args(cls, args: list[str]) -> list[str]:
        for arg in args:
            found = secret_in_value(arg)
            if found:
                raise ValueError(f"job_args contain what looks like {found}; use the job's role")
        return args


@dataclass
class LaunchResult:
    """What was launched and how it ended (status is "InProgress" when not waited for)."""

    job_name: str
    job_arn: str
    code_uri: str
    status: str
    model_artifacts: str | None = None
    failure_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("Completed", "InProgress")


# ---- source package --------------------------------------------------------------------------------------


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(rel, pat) or any(fnmatch.fnmatch(part, pat) for part in parts)
               for pat in patterns)


def list_source_files(source_dir: str | Path, exclude: list[str] | tuple[str, ...] = (),
                      include: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Relative paths to package: git-tracked files plus those matching ``include`` (outside git: ``include``
    only, or every file when ``include`` is empty), minus `ALWAYS_EXCLUDED` and ``exclude``."""
    root = Path(source_dir).resolve()
    patterns = ALWAYS_EXCLUDED + tuple(exclude)
    every = [p.relative_to(root).as_posix() for p in root.rglob("*") if ".git" not in p.relative_to(root).parts]
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached"], capture_output=True,
                             check=True).stdout
        candidates = [p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        candidates = [] if include else every
    candidates += [rel for rel in every if any(fnmatch.fnmatch(rel, pat) for pat in include)]
    return sorted(rel for rel in set(candidates)
                  if (root / rel).is_file() and not (root / rel).is_symlink() and not _excluded(rel, patterns))


def build_source_tarball(source_dir: str | Path, exclude: list[str] | tuple[str, ...] = (),
                         include: list[str] | tuple[str, ...] = (),
                         max_mb: float = DEFAULT_MAX_PACKAGE_MB) -> bytes:
    """The gzip tarball SageMaker unpacks into /opt/ml/code (paths relative to `source_dir`); refuses more than
    ``max_mb`` of files, naming the largest."""
    root = Path(source_dir).resolve()
    files = list_source_files(root, exclude, include)
    if "pyproject.toml" not in files or BOOTSTRAP_PROGRAM not in files:
        raise ConfigError(f"{root} is not a raycad checkout (pyproject.toml and {BOOTSTRAP_PROGRAM} needed)")
    sizes = {rel: (root / rel).stat().st_size for rel in files}
    total = sum(sizes.values())
    if total > max_mb * 2**20:
        largest = ", ".join(f"{rel} ({n / 2**20:.1f} MB)" for rel, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        raise ConfigError(f"the source package would hold {total / 2**20:.1f} MB (limit {max_mb:g} MB; largest: "
                          f"{largest}); put data on S3, add patterns to exclude, or raise max_package_mb")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


# ---- request ---------------------------------------------------------------------------------------------


def default_job_name(job: str) -> str:
    return f"raycad-{job.replace('_', '-')}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


OUTPUT_KEYS = {"finetune": ("run.output_dir", "run.storage_path", ("--output", "-o"), ()),
               "pretrain": ("run.output_dir", "run.storage_path", ("--output", "-o"), ()),
               "tune": ("output_dir", "storage_path", ("--output", "-o"), ("--storage",))}
"""Per job: the config keys of its local output directory and its Ray storage, and the CLI flags for them."""


def job_arguments(cfg: SageMakerConfig, job_name: str) -> list[str]:
    """The job's arguments plus where its outputs go on SageMaker (unless the user already chose).

    Local outputs go to /opt/ml/model (uploaded by SageMaker as model.tar.gz); Ray Train/Tune storage goes
    to ``<output_path>/<job_name>/ray`` on S3, which every instance of the job can reach.
    """
    args = list(cfg.job_args)
    if cfg.job not in OUTPUT_KEYS:
        return args
    output_key, storage_key, output_flags, storage_flags = OUTPUT_KEYS[cfg.job]

    def given(key: str, flags: tuple[str, ...]) -> bool:
        return any(a.startswith(f"{key}=") or a in flags or a.split("=")[0] in flags for a in args)

    if not given(output_key, output_flags):
        args += ["--set", f"{output_key}={MODEL_DIR}"]
    if not given(storage_key, storage_flags):
        args += ["--set", f"{storage_key}={cfg.output_path.rstrip('/')}/{job_name}/ray"]
    return args


def training_job_request(cfg: SageMakerConfig, job_name: str, code_uri: str, region: str) -> dict[str, Any]:
    """Keyword arguments of ``sagemaker.create_training_job`` for this config."""
    raycad_args = shlex.join(job_arguments(cfg, job_name))
    if len(raycad_args) > 2500:
        raise ConfigError(f"job arguments are {len(raycad_args)} characters; SageMaker allows 2500 per "
                          "hyper-parameter: put them in a config file in the source tree and pass --config")
    # Values are JSON strings, as the training toolkit expects (it json-decodes each one).
    hyperparameters = {
        "sagemaker_program": BOOTSTRAP_PROGRAM,
        "sagemaker_submit_directory": code_uri,
        "sagemaker_region": region,
        "sagemaker_container_log_level": "20",
        "raycad_job": cfg.job,
        "raycad_args": raycad_args,
        "raycad_extras": cfg.extras,
    }
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "RoleArn": cfg.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": cfg.image_uri or DEFAULT_IMAGE.format(region=region),
            "TrainingInputMode": "File",
        },
        "HyperParameters": {k: json.dumps(v) for k, v in hyperparameters.items()},
        "OutputDataConfig": {"S3OutputPath": cfg.output_path.rstrip("/")},
        "ResourceConfig": {
            "InstanceType": cfg.instance_type,
            "InstanceCount": cfg.instance_count,
            "VolumeSizeInGB": cfg.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_runtime_s},
        "Environment": {"RAYCAD_LOG_LEVEL": "INFO", "RAY_USAGE_STATS_ENABLED": "0", **cfg.environment},
        "EnableManagedSpotTraining": cfg.use_spot,
    }
    if cfg.use_spot:
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(cfg.max_wait_s or 0, cfg.max_runtime_s)
    if cfg.subnets or cfg.security_group_ids:
        request["VpcConfig"] = {"Subnets": cfg.subnets, "SecurityGroupIds": cfg.security_group_ids}
    if cfg.tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in cfg.tags.items()]
    return request


# ---- launch and follow -----------------------------------------------------------------------------------


def follow_training_job(client: Any, job_name: str, poll_interval_s: float = 30.0) -> dict[str, Any]:
    """Poll ``describe_training_job`` until the job ends, printing each status change; the last answer."""
    started, last = time.monotonic(), None
    with console.status(f"SageMaker job {job_name}") as spinner:
        while True:
            desc = client.describe_training_job(TrainingJobName=job_name)
            status, secondary = desc["TrainingJobStatus"], desc["SecondaryStatus"]
            transitions = desc.get("SecondaryStatusTransitions") or []
            message = transitions[-1].get("StatusMessage", "") if transitions else ""
            if (status, secondary) != last:
                console.print(f"[bold]{job_name}[/]: {status} / {secondary}" + (f" - {message}" if message else ""))
                last = (status, secondary)
            spinner.update(f"SageMaker job {job_name}: {status} / {secondary} "
                           f"({time.monotonic() - started:.0f}s)")
            if status in TERMINAL:
                return desc
            time.sleep(poll_interval_s)


def launch_sagemaker(cfg: SageMakerConfig, *, sagemaker_client: Any = None, s3_client: Any = None
                     ) -> LaunchResult:
    """Package the source, upload it, create the training job and (if `cfg.wait`) follow it to the end."""
    import boto3

    session = boto3.session.Session(region_name=cfg.region)
    region = cfg.region or session.region_name
    if not region:
        raise ConfigError("no AWS region: set region in the config or AWS_DEFAULT_REGION")
    s3 = s3_client or storage.s3_client(cfg.s3_endpoint_url, region)
    sagemaker = sagemaker_client or session.client("sagemaker", endpoint_url=cfg.sagemaker_endpoint_url)

    job_name = cfg.job_name or default_job_name(cfg.job)
    bucket, prefix = storage.split_s3(cfg.output_path)
    key = "/".join(p for p in (prefix, job_name, "source", "sourcedir.tar.gz") if p)
    code_uri = f"s3://{bucket}/{key}"

    package = build_source_tarball(cfg.source_dir, cfg.exclude, cfg.include, cfg.max_package_mb)
    log.info(f"uploading the source package ({len(package) / 1e6:.2f} MB) to {code_uri}")
    s3.upload_fileobj(io.BytesIO(package), bucket, key)

    request = training_job_request(cfg, job_name, code_uri, region)
    log.info(f"creating training job {job_name}: {cfg.instance_count} x {cfg.instance_type}, "
             f"image {request['AlgorithmSpecification']['TrainingImage']}")
    log.info(f"job: jobs/{cfg.job}.py {json.loads(request['HyperParameters']['raycad_args'])}")
    arn = sagemaker.create_training_job(**request)["TrainingJobArn"]
    result = LaunchResult(job_name=job_name, job_arn=arn, code_uri=code_uri, status="InProgress")
    output = f"{cfg.output_path.rstrip('/')}/{job_name}/output/model.tar.gz"
    if not cfg.wait:
        console.print(f"Launched {arn}; outputs will be at {output}")
        return result

    desc = follow_training_job(sagemaker, job_name, cfg.poll_interval_s)
    result.status = desc["TrainingJobStatus"]
    result.model_artifacts = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts") or output
    result.failure_reason = desc.get("FailureReason")
    if result.status == "Completed":
        console.print(f"[green]SageMaker job {job_name} completed.[/] Outputs: {result.model_artifacts}")
        if cfg.job in OUTPUT_KEYS:
            console.print(f"Ray storage (checkpoints): {cfg.output_path.rstrip('/')}/{job_name}/ray")
    else:
        console.print(f"[red]SageMaker job {job_name} {result.status.lower()}[/]: "
                      f"{result.failure_reason or 'no reason given'}")
    console.print(f"Logs: CloudWatch log group /aws/sagemaker/TrainingJobs, streams {job_name}/algo-*")
    return result

