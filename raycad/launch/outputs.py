"""Copy a finished run's local outputs (results.json, metrics.csv, plots, the exported model) to storage.

On a cluster the driver writes its outputs on whichever node ran the job; `publish_outputs` puts them next
to the run's Ray Train checkpoints (``<storage_path>/<run name>/``) when that storage is remote (``s3://``),
so that everything of a run is found in one place.
"""

from __future__ import annotations

from pathlib import Path

from raycad.runtime import get_logger

log = get_logger("raycad.launch.outputs")


def _filesystem(uri: str, endpoint: str | None, region: str | None):
    import pyarrow.fs

    if uri.startswith("s3://") and (endpoint or region):
        return pyarrow.fs.S3FileSystem(endpoint_override=endpoint, region=region), uri[len("s3://"):]
    return pyarrow.fs.FileSystem.from_uri(uri)


def publish_outputs(run_dir: str | Path, destination: str, *, endpoint: str | None = None,
                    region: str | None = None, skip: tuple[str, ...] = ("ray",)) -> list[str]:
    """Copy the files under `run_dir` (minus the top-level entries in `skip`) to the `destination` URI.

    Returns the destination paths written. `endpoint`/`region` override the S3 endpoint (MinIO, moto);
    credentials come from the standard AWS chain and are never logged.
    """
    import pyarrow.fs

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    fs, base = _filesystem(destination.rstrip("/"), endpoint, region)
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


def publish_run(cfg, run_dir: str | Path) -> list[str]:
    """`publish_outputs` for a `FinetuneConfig` run: to ``<run.storage_path>/<run.name>`` when remote."""
    storage = cfg.run.storage_path
    if not storage or "://" not in storage or storage.startswith("file://"):
        return []
    return publish_outputs(run_dir, f"{storage.rstrip('/')}/{Path(run_dir).name}",
                           endpoint=cfg.data.s3_endpoint, region=cfg.data.s3_region)
