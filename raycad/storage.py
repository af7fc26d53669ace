"""Where a run's bytes live: the one place raycad builds filesystems and S3 clients, and publishes outputs.

Local paths and ``s3://`` URIs are read and written through pyarrow filesystems; the optional ``endpoint``
(an S3-compatible store: MinIO, moto) and ``region`` come from the config's ``storage`` section and are
honoured alike by data reads, Ray Train / Tune checkpoint storage and published outputs. Credentials come
from the standard AWS chain and are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from raycad.config import ConfigError
from raycad.runtime import get_logger

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = get_logger("raycad.storage")


class StorageError(ConfigError):
    """A URI this storage layer cannot serve (an unsupported scheme, a malformed s3:// URI)."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith(("s3://", "s3a://"))


def split_s3(uri: str, what: str | None = None) -> tuple[str, str]:
    """``s3://bucket/some/key/`` -> ``("bucket", "some/key")``; ``what`` names the setting in the error."""
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise StorageError(f"{what} must be s3://bucket/prefix, got {uri!r}" if what else
                           f"not an s3://bucket/key URI: {uri!r}")
    return parts.netloc, parts.path.strip("/")


def s3_filesystem(endpoint: str | None = None, region: str | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem with credentials from the AWS chain (env, profile, config, instance role).

    ``endpoint`` (else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) may carry its scheme
    (``http://127.0.0.1:9000``). Static credentials found on the driver (environment, shared credentials or
    config file) are passed explicitly so that Ray workers on other nodes, or started before they were set,
    use the same ones; refreshable ones (instance or container roles, SSO, assume-role) are left to each
    worker's own chain so they keep refreshing. They travel only inside the pickled filesystem.
    """
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {}
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        import botocore.session

        session = botocore.session.get_session()
        region = region or session.get_config_variable("region")
        creds = session.get_credentials()
        if creds is not None and creds.method in ("env", "shared-credentials-file", "config-file", "explicit"):
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
            if frozen.token:
                kwargs["session_token"] = frozen.token
    except ImportError:
        pass
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parts.netloc or parts.path, scheme=parts.scheme or "https")
        region = region or "us-east-1"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str, endpoint: str | None = None, region: str | None = None, *,
               error: Callable[[str], Exception] = StorageError) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, prefix to show users) for a local path, ``file://`` or ``s3://`` URI.

    ``error`` builds the exception for an unsupported scheme (the data readers raise their `SourceError`).
    """
    import pyarrow.fs as pafs

    uri = str(uri)
    if is_s3(uri):
        return s3_filesystem(endpoint, region), uri.split("://", 1)[1], "s3://"
    if "://" in uri and not uri.startswith("file://"):
        raise error(f"unsupported URI scheme in {uri!r}: use a local path, s3://, or hf://")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri.removeprefix("file://"))), ""


def ray_storage(uri: str, endpoint: str | None = None, region: str | None = None) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Train / Tune: an absolute local path and None, or the
    bucket path and the `s3_filesystem` honouring ``endpoint`` / ``region``."""
    if "://" in uri and not is_s3(uri) and not uri.startswith("file://"):
        raise StorageError(f"storage_path {uri!r}: only local paths and s3:// are supported")
    fs, path, _ = filesystem(uri, endpoint, region)
    return (path, fs) if is_s3(uri) else (path, None)


def s3_client(endpoint: str | None = None, region: str | None = None, config: Any = None) -> Any:
    """A boto3 S3 client (for what pyarrow does not do: multipart uploads with digests, tagging)."""
    import boto3

    return boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint, config=config)


def publish_outputs(run_dir: str | Path, destination: str, *, endpoint: str | None = None,
                    region: str | None = None, skip: tuple[str, ...] = ("ray",)) -> list[str]:
    """Copy the files under ``run_dir`` (minus the top-level entries in ``skip``) to the ``destination`` URI.

    Returns the destination paths written.
    """
    import pyarrow.fs

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    fs, base, _ = filesystem(destination.rstrip("/"), endpoint, region)
    local = pyarrow.fs.LocalFileSystem()
    written = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in skip:
            continue
        target = f"{base}/{rel.as_posix()}"
        pyarrow.fs.copy_files(str(path), target, source_filesystem=local, destination_filesystem=fs)
        written.append(target)
    log.info(f"published {len(written)} output files of {run_dir.name} to {destination}")
    return written


def publish_run(cfg: Any, run_dir: str | Path) -> list[str]:
    """Copy a finished run's local outputs (results.json, metrics.csv, plots, the exported model) next to its
    Ray Train checkpoints, ``<run.storage_path>/<run name>/``, when that storage is remote; on a cluster the
    driver writes them on whichever node ran the job, so this puts everything of a run in one place."""
    storage = cfg.run.storage_path
    if not storage or "://" not in storage or storage.startswith("file://"):
        return []
    return publish_outputs(run_dir, f"{storage.rstrip('/')}/{Path(run_dir).name}",
                           endpoint=cfg.storage.endpoint, region=cfg.storage.region)
