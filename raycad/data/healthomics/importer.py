"""Import labelled sequences into an AWS HealthOmics sequence store as FASTQ read sets.

`import_to_sequence_store(cfg)`:

1. reads the source the data layer reads (the bundled demo, a Genomic Benchmarks task, or a user's URIs
   in ``cfg.data``) and writes gzip FASTQ with dummy qualities, one file per (task, split, class), or
   several when ``shard_bytes`` is set. Each read is ``@<id> label=<int>``; each file is written as many
   small, record-aligned gzip members so that every part of the stored read set can be streamed on its own;
2. names each read set ``<prefix>-<task>-<split>-<class>-<shard>-<digest>`` (the digest of its FASTQ
   text), with subjectId ``<task>:<split>``, sampleId ``<class>`` and ``raycad:*`` tags carrying the labels;
3. finds or creates the sequence store (by id, or by name; waits until ACTIVE), lists its read sets and
   skips every file whose read set already exists: running the import twice imports nothing new;
4. uploads the new files to the S3 staging prefix (multipart, with checksums), starts
   ``StartReadSetImportJob`` in batches of at most 100 sources, and waits with botocore's
   ``read_set_import_job_completed`` waiter (delay and attempts from the config) behind a progress line;
5. writes a manifest (read set id -> task, split, class, label, counts) and returns an `ImportResult` whose
   ``failed`` list names each failed source with HealthOmics' statusMessage.

No credentials, role ARNs or endpoints are written to the manifest or the logs' record lines.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, WaiterError
from pydantic import Field

from raycad.config import Config, ConfigError, DataSection
from raycad.data.healthomics.client import (
    HealthOmicsError,
    OmicsConnection,
    error_code,
    explain,
    omics_client,
    s3_client,
)
from raycad.data.healthomics.progress import transfer, waiting
from raycad.runtime import get_logger
from raycad.storage import split_s3

log = get_logger("raycad.data.healthomics")

MAX_SOURCES_PER_JOB = 100
_PRESENT = {"ACTIVE", "ARCHIVED", "ACTIVATING", "PROCESSING_UPLOAD"}
"""Read set states that count as already imported (anything else, e.g. UPLOAD_FAILED, is imported again)."""
_FINAL_JOB_STATES = {"COMPLETED", "COMPLETED_WITH_FAILURES", "FAILED", "CANCELLED"}


class OmicsImportConfig(Config):
    """Everything `raycad omics import` needs; loads and overrides like every raycad config."""

    data: DataSection = Field(default_factory=DataSection)
    """What to import: ``data.task`` (a benchmark task), ``data.train`` / ``validation`` / ``test`` URIs
    (read with the same options as fine-tuning), or neither for the bundled demo."""
    splits: list[str] = Field(default_factory=lambda: ["train", "validation", "test"])
    """Which of the source's splits to import (those the source lacks are skipped, with a note)."""
    store: str = "raycad"
    """Sequence store id (digits) or name; a name that does not exist is created when ``create_store``."""
    create_store: bool = True
    role_arn: str | None = None
    """IAM role HealthOmics assumes to read the staging prefix (required when something must be imported)."""
    staging_uri: str | None = None
    """``s3://bucket/prefix`` where the FASTQ files are uploaded before the import."""
    region: str | None = None
    endpoint_url: str | None = None
    """Omics endpoint override (VPC endpoint; a local stand-in in tests)."""
    s3_endpoint_url: str | None = None
    name_prefix: str = "raycad"
    dataset_name: str | None = None
    """The ``task`` part of names and subjectIds; default: the task name, the demo's task, or the URI's stem."""
    shard_bytes: int = Field(0, ge=0)
    """Start a new FASTQ file after this many uncompressed bytes; 0 = one file per (task, split, class)."""
    gzip_member_bytes: int = Field(1 << 20, ge=4096)
    """Uncompressed bytes per gzip member: smaller members make part-parallel streaming finer."""
    sources_per_job: int = Field(MAX_SOURCES_PER_JOB, ge=1, le=MAX_SOURCES_PER_JOB)
    waiter_delay: float = Field(30.0, gt=0)
    """Seconds between GetReadSetImportJob polls (botocore WaiterConfig Delay)."""
    waiter_max_attempts: int = Field(480, ge=1)
    """Polls before giving up (WaiterConfig MaxAttempts); 480 x 30 s = 4 h."""
    store_wait_delay: float = Field(5.0, gt=0)
    store_wait_max_attempts: int = Field(120, ge=1)
    multipart_threshold: int = Field(64 << 20, ge=5 << 20)
    multipart_chunksize: int = Field(64 << 20, ge=5 << 20)
    checksum_algorithm: Literal["CRC32", "CRC32C", "SHA1", "SHA256"] = "CRC32"
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra tags for every new read set (and a new store)."""
    manifest: str = "healthomics_manifest.json"
    work_dir: str | None = None
    """Where the FASTQ files are written; None = a temporary directory removed afterwards."""
    max_attempts: int = Field(10, ge=1)
    """Attempts per request in botocore's adaptive retry mode."""

    def connection(self) -> OmicsConnection:
        return OmicsConnection(region=self.region, endpoint_url=self.endpoint_url,
                               s3_endpoint_url=self.s3_endpoint_url, max_attempts=self.max_attempts)


# ---- results -----------------------------------------------------------------------------------------------------


@dataclass
class ReadSetEntry:
    """One imported (or already present) read set, as written to the manifest."""

    name: str
    task: str
    split: str
    class_name: str
    label: int
    shard: int
    records: int
    bases: int
    sha256: str
    read_set_id: str | None = None
    status: str = "pending"
    """"imported", "existing", "failed" or "pending"."""
    import_job_id: str | None = None
    message: str | None = None


@dataclass
class ImportResult:
    """What an import did; ``ok`` is False when any source failed."""

    store_id: str
    store_name: str | None
    entries: list[ReadSetEntry]
    class_names: list[str]
    manifest_path: Path | None
    skipped: dict[str, int] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)

    @property
    def imported(self) -> list[ReadSetEntry]:
        return [e for e in self.entries if e.status == "imported"]

    @property
    def existing(self) -> list[ReadSetEntry]:
        return [e for e in self.entries if e.status == "existing"]

    @property
    def failed(self) -> list[ReadSetEntry]:
        return [e for e in self.entries if e.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def uri(self, split: str | None = None) -> str:
        """A ``healthomics://`` URI selecting this import's read sets (of one split when given)."""
        entries = [e for e in self.entries if e.read_set_id and (split is None or e.split == split)]
        if not entries:
            raise ValueError(f"no imported read sets{f' for split {split!r}' if split else ''}")
        subjects = {f"{e.task}:{e.split}" for e in entries}
        query = f"?subjectId={subjects.pop()}" if len(subjects) == 1 else ""
        return f"healthomics://{self.store_id}{query}"


# ---- FASTQ files -------------------------------------------------------------------------------------------------


@dataclass
class _Shard:
    entry: ReadSetEntry
    path: Path


class _FastqWriter:
    """Record-aligned multi-member gzip FASTQ with dummy qualities; tracks counts and the text's sha256."""

    def __init__(self, path: Path, member_bytes: int) -> None:
        self.path, self.member_bytes = path, member_bytes
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.records = self.bases = self.text_bytes = 0
        self.digest = hashlib.sha256()

    def write(self, read_id: str, sequence: str, label: int) -> None:
        record = f"@{read_id} label={label}\n{sequence}\n+\n{'I' * len(sequence)}\n".encode()
        self.buffer.append(record)
        self.buffered += len(record)
        self.records += 1
        self.bases += len(sequence)
        self.text_bytes += len(record)
        if self.buffered >= self.member_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            text = b"".join(self.buffer)
            self.digest.update(text)
            self.handle.write(gzip.compress(text, compresslevel=6, mtime=0))
            self.buffer, self.buffered = [], 0

    def close(self) -> str:
        self._flush()
        self.handle.close()
        return self.digest.hexdigest()


def _safe(text: str, limit: int = 40) -> str:
    """A name component: letters, digits, ``_ . -`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:limit] or "x"


def _source_splits(cfg: OmicsImportConfig) -> tuple[str, list[str], dict[str, Iterator[tuple[str | None, str, Any]]]]:
    """(dataset name, class names, split -> iterator of (id, sequence, label)) for ``cfg.data``."""
    data = cfg.data
    from raycad.data.tasks import get_task

    task = get_task(data.task) if data.task else None
    if not data.train and task is None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from raycad.data.loader import BUNDLED_DEMO, DEMO_TASK

        table = pq.read_table(BUNDLED_DEMO, columns=["id", "sequence", "label", "split"])
        split_column = table["split"].cast("string")
        splits = {}
        for name in ("train", "validation", "test"):
            part = table.filter(pc.equal(split_column, name))
            splits[name] = zip(part["id"].to_pylist(), part["sequence"].to_pylist(), part["label"].to_pylist())
        names = list(data.class_names or get_task(DEMO_TASK).class_names)
        return cfg.dataset_name or DEMO_TASK, names, splits

    from raycad.data.sources import read_sequences

    if data.train:
        uris = {"train": data.train, "validation": data.validation, "test": data.test}
        datasets = {name: read_sequences(uri, data, split=name) for name, uri in uris.items() if uri}
        default_name = Path(urlsplit(data.train).path).name.split(".")[0] or "dataset"
        dataset_name = cfg.dataset_name or (task.name if task else default_name)
    else:
        hf = data.model_copy(update={"format": "hf"})
        datasets = {name: read_sequences(task.hf_id, hf, split=name) for name in ("train", "test")}
        dataset_name = cfg.dataset_name or task.name
    names = list(data.class_names or (task.class_names if task else []))
    return dataset_name, names, {name: _iter_rows(ds) for name, ds in datasets.items()}


def _iter_rows(ds) -> Iterator[tuple[str | None, str, Any]]:
    """Rows of a Ray Dataset in a deterministic order (so that file digests repeat across runs)."""
    ds.context.execution_options.preserve_order = True
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=8192):
        ids = batch["id"].to_pylist() if "id" in batch.column_names else [None] * batch.num_rows
        yield from zip(ids, batch["sequence"].to_pylist(), batch["label"].to_pylist())


def _label_id(label: Any, class_names: list[str], named: bool, where: str) -> int:
    """The integer label of a record; without given class names, integer labels name classes "0", "1", ..."""
    if isinstance(label, str) and label in class_names:
        return class_names.index(label)
    try:
        label_id = int(label)
    except (TypeError, ValueError):
        raise HealthOmicsError(f"{where}: label {label!r} is not one of the classes {class_names} "
                               f"(set data.class_names)") from None
    if label_id < 0 or (named and label_id >= len(class_names)):
        raise HealthOmicsError(f"{where}: label {label_id} is out of range for the classes {class_names}")
    while label_id >= len(class_names):
        class_names.append(str(len(class_names)))
    return label_id


def write_fastq_files(cfg: OmicsImportConfig, out_dir: Path) -> tuple[list[_Shard], list[str], dict[str, int]]:
    """Write the FASTQ shards of every split and class; returns (shards, class names, skipped counts)."""
    dataset, class_names, splits = _source_splits(cfg)
    missing = [s for s in cfg.splits if s not in splits]
    if missing:
        log.info("the source has no %s split(s); importing %s", missing, [s for s in cfg.splits if s in splits])
    shards: list[_Shard] = []
    skipped: dict[str, int] = {}
    named = bool(class_names)
    for split in [s for s in cfg.splits if s in splits]:
        writers: dict[int, tuple[_FastqWriter, int]] = {}
        done: list[tuple[_FastqWriter, int, int]] = []
        for index, (read_id, sequence, label) in enumerate(splits[split]):
            label_id = _label_id(label, class_names, named, f"{dataset} [{split}] record {index + 1} (id {read_id})")
            if not sequence:
                skipped["empty_sequence"] = skipped.get("empty_sequence", 0) + 1
                continue
            current = writers.get(label_id)
            if current is None or (cfg.shard_bytes and current[0].text_bytes >= cfg.shard_bytes):
                if current is not None:
                    done.append((*current, label_id))
                shard = current[1] + 1 if current else 0
                path = out_dir / f"{_safe(dataset)}-{split}-{label_id}-{shard:03d}.fastq.gz"
                writers[label_id] = current = (_FastqWriter(path, cfg.gzip_member_bytes), shard)
            read_id = re.sub(r"\s+", "_", str(read_id)) if read_id not in (None, "") else f"{split}-{index}"
            current[0].write(read_id, sequence, label_id)
        done += [(writer, shard, label_id) for label_id, (writer, shard) in writers.items()]
        for writer, shard, label_id in sorted(done, key=lambda d: (d[2], d[1])):
            digest = writer.close()
            class_name = class_names[label_id]
            name = (f"{_safe(cfg.name_prefix, 20)}-{_safe(dataset, 40)}-{_safe(split, 12)}-{_safe(class_name, 24)}"
                    f"-{shard:03d}-{digest[:10]}")
            entry = ReadSetEntry(name=name, task=dataset, split=split, class_name=class_name, label=label_id,
                                 shard=shard, records=writer.records, bases=writer.bases, sha256=digest)
            shards.append(_Shard(entry, writer.path))
    if skipped:
        log.warning("skipped records: %s", skipped)
    return shards, class_names, skipped


# ---- the store ---------------------------------------------------------------------------------------------------


def resolve_store(client, cfg: OmicsImportConfig) -> tuple[str, str | None]:
    """(store id, name): by id, or by name (created when missing and allowed); waits until ACTIVE."""
    ref = cfg.store
    try:
        if ref.isdigit():
            store = client.get_sequence_store(id=ref)
        else:
            matches = [s for page in client.get_paginator("list_sequence_stores").paginate(filter={"name": ref})
                       for s in page["sequenceStores"] if s.get("name") == ref]
            if len(matches) > 1:
                raise HealthOmicsError(f"HealthOmics: {len(matches)} sequence stores are named {ref!r} "
                                       f"({', '.join(s['id'] for s in matches)}); pass the store id instead")
            if matches:
                store = matches[0]
            elif not cfg.create_store:
                raise HealthOmicsError(f"HealthOmics: no sequence store named {ref!r} (and create_store is off)")
            else:
                log.info("creating sequence store %r", ref)
                token = hashlib.sha256(f"raycad-store:{ref}".encode()).hexdigest()[:32]
                request: dict[str, Any] = {"name": ref, "description": "raycad: DNA sequences for Caduceus",
                                           "clientToken": token}
                if cfg.tags:
                    request["tags"] = dict(cfg.tags)
                store = client.create_sequence_store(**request)
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            raise HealthOmicsError(f"HealthOmics: sequence store {ref} not found (check the id and the region "
                                   f"{client.meta.region_name})") from None
        raise explain(err, f"find sequence store {ref!r}") from None
    return _wait_store_active(client, store, cfg), store.get("name")


def _wait_store_active(client, store: dict, cfg: OmicsImportConfig) -> str:
    store_id, status = store["id"], store.get("status", "ACTIVE")
    if status == "ACTIVE":
        return store_id
    with waiting(f"sequence store {store_id}") as update:
        for _ in range(cfg.store_wait_max_attempts):
            if status == "ACTIVE":
                return store_id
            if status in ("FAILED", "DELETING"):
                raise HealthOmicsError(f"HealthOmics: sequence store {store_id} is {status}: "
                                       f"{store.get('statusMessage', 'no status message')}")
            update(status)
            time.sleep(cfg.store_wait_delay)
            try:
                store = client.get_sequence_store(id=store_id)
            except ClientError as err:
                raise explain(err, f"get sequence store {store_id}") from None
            status = store.get("status", "ACTIVE")
    if status == "ACTIVE":
        return store_id
    raise HealthOmicsError(f"HealthOmics: sequence store {store_id} still {status} after "
                           f"{cfg.store_wait_max_attempts} checks")


def existing_read_sets(client, store_id: str, subject_ids: set[str]) -> dict[str, dict]:
    """Name -> read set (list item) of the present read sets with these subjectIds."""
    found: dict[str, dict] = {}
    for subject in sorted(subject_ids):
        try:
            pages = client.get_paginator("list_read_sets").paginate(
                sequenceStoreId=store_id, filter={"subjectId": subject})
            for page in pages:
                for item in page["readSets"]:
                    if item.get("status") in _PRESENT and item.get("name"):
                        found.setdefault(item["name"], item)
        except ClientError as err:
            raise explain(err, f"list the read sets of sequence store {store_id}") from None
    return found


# ---- upload and import -------------------------------------------------------------------------------------------


def upload(cfg: OmicsImportConfig, shards: list[_Shard]) -> dict[str, str]:
    """Upload shard files to the staging prefix (skipping objects already there with the same digest)."""
    from boto3.s3.transfer import TransferConfig

    if not cfg.staging_uri:
        raise ConfigError("staging_uri is required to import new read sets (s3://bucket/prefix)")
    bucket, prefix = split_s3(cfg.staging_uri, "staging_uri")
    s3 = s3_client(cfg.connection())
    transfer_config = TransferConfig(multipart_threshold=cfg.multipart_threshold,
                                     multipart_chunksize=cfg.multipart_chunksize)
    uris: dict[str, str] = {}
    todo: list[tuple[_Shard, str]] = []
    for shard in shards:
        key = f"{prefix}/{shard.entry.name}.fastq.gz" if prefix else f"{shard.entry.name}.fastq.gz"
        uris[shard.entry.name] = f"s3://{bucket}/{key}"
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if head.get("Metadata", {}).get("raycad-sha256") == shard.entry.sha256:
                continue
        except ClientError as err:
            if error_code(err) not in ("404", "NoSuchKey", "NotFound"):
                raise explain(err, f"check s3://{bucket}/{key}") from None
        todo.append((shard, key))
    if not todo:
        return uris
    total = sum(shard.path.stat().st_size for shard, _ in todo)
    with transfer(f"uploading {len(todo)} FASTQ file(s) to s3://{bucket}/{prefix}", total) as advance:
        for shard, key in todo:
            extra = {"ChecksumAlgorithm": cfg.checksum_algorithm, "ContentType": "application/gzip",
                     "Metadata": {"raycad-sha256": shard.entry.sha256}}
            try:
                s3.upload_file(str(shard.path), bucket, key, ExtraArgs=extra, Config=transfer_config,
                               Callback=advance)
            except ClientError as err:
                raise explain(err, f"upload {shard.path.name} to s3://{bucket}/{key}") from None
            except S3UploadFailedError as err:  # wraps the ClientError in its message
                raise HealthOmicsError(f"cannot upload {shard.path.name} to s3://{bucket}/{key}: {err}") from None
    return uris


def _source_item(entry: ReadSetEntry, uri: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "sourceFiles": {"source1": uri},
        "sourceFileType": "FASTQ",
        "subjectId": f"{entry.task}:{entry.split}",
        "sampleId": entry.class_name,
        "name": entry.name,
        "description": f"raycad import: {entry.task} {entry.split} class {entry.class_name} (label {entry.label}), "
                       f"{entry.records} reads",
        "tags": {**tags, "raycad:task": entry.task, "raycad:split": entry.split, "raycad:class": entry.class_name,
                 "raycad:label": str(entry.label), "raycad:records": str(entry.records),
                 "raycad:sha256": entry.sha256},
    }


def start_imports(client, cfg: OmicsImportConfig, store_id: str, entries: list[ReadSetEntry],
                  uris: dict[str, str]) -> list[tuple[str, list[ReadSetEntry]]]:
    """StartReadSetImportJob in batches of ``sources_per_job``; returns (job id, its entries) per batch."""
    if not cfg.role_arn:
        raise ConfigError("role_arn is required to import new read sets (an IAM role HealthOmics can assume)")
    jobs = []
    for start in range(0, len(entries), cfg.sources_per_job):
        batch = entries[start:start + cfg.sources_per_job]
        token = hashlib.sha256("|".join(e.name for e in batch).encode()).hexdigest()[:32]
        try:
            job = client.start_read_set_import_job(
                sequenceStoreId=store_id, roleArn=cfg.role_arn, clientToken=token,
                sources=[_source_item(e, uris[e.name], cfg.tags) for e in batch])
        except ClientError as err:
            raise explain(err, f"start a read set import job in sequence store {store_id}") from None
        log.info("import job %s started: %d source(s)", job["id"], len(batch))
        for entry in batch:
            entry.import_job_id = job["id"]
        jobs.append((job["id"], batch))
    return jobs


def wait_for_import(client, cfg: OmicsImportConfig, store_id: str, job_id: str) -> dict:
    """Wait with the ``read_set_import_job_completed`` waiter; returns the job's final description."""
    last: dict[str, Any] = {}

    with waiting(f"import job {job_id}") as update:
        def on_poll(parsed: dict, **_: Any) -> None:
            if "status" in parsed:
                last.clear()
                last.update(parsed)
                sources = parsed.get("sources", [])
                finished = sum(s.get("status") == "FINISHED" for s in sources)
                failed = sum(s.get("status") == "FAILED" for s in sources)
                update(f"{parsed['status']} ({finished}/{len(sources)} finished, {failed} failed)")

        event = "after-call.omics.GetReadSetImportJob"
        client.meta.events.register(event, on_poll, unique_id=f"raycad-wait-{job_id}")
        try:
            client.get_waiter("read_set_import_job_completed").wait(
                sequenceStoreId=store_id, id=job_id,
                WaiterConfig={"Delay": cfg.waiter_delay, "MaxAttempts": cfg.waiter_max_attempts})
        except WaiterError as err:
            response = err.last_response or {}
            if "Error" in response:
                code = response["Error"].get("Code", "")
                raise HealthOmicsError(f"HealthOmics: cannot follow import job {job_id}: {code}: "
                                       f"{response['Error'].get('Message', '')}") from None
            if response.get("status") not in _FINAL_JOB_STATES:
                raise HealthOmicsError(
                    f"HealthOmics: import job {job_id} still {response.get('status', 'unknown')} after "
                    f"{cfg.waiter_max_attempts} polls {cfg.waiter_delay:g} s apart; raise waiter_max_attempts, or "
                    f"run the import again later (it only imports what is missing)") from None
            return response
        finally:
            client.meta.events.unregister(event, unique_id=f"raycad-wait-{job_id}")
    return last if last.get("status") == "COMPLETED" else client.get_read_set_import_job(
        sequenceStoreId=store_id, id=job_id)


def _apply_job_result(job: dict, entries: list[ReadSetEntry]) -> None:
    by_name = {e.name: e for e in entries}
    status = job.get("status")
    for source in job.get("sources", []):
        entry = by_name.get(source.get("name", ""))
        if entry is None:
            continue
        if source.get("status") == "FINISHED" and source.get("readSetId"):
            entry.status, entry.read_set_id = "imported", source["readSetId"]
        else:
            entry.status = "failed"
            entry.message = source.get("statusMessage") or f"source {source.get('status')} (job {status})"
    for entry in entries:
        if entry.status == "pending":
            entry.status = "failed"
            entry.message = f"import job {job.get('id')} ended {status}: {job.get('statusMessage', 'no message')}"


# ---- entry point -------------------------------------------------------------------------------------------------


def import_to_sequence_store(cfg: OmicsImportConfig, *, client=None) -> ImportResult:
    """Import ``cfg.data`` into the sequence store ``cfg.store`` (see the module docstring); idempotent."""
    client = client or omics_client(cfg.connection())
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="raycad-omics-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        shards, class_names, skipped = write_fastq_files(cfg, work)
        if not shards:
            raise HealthOmicsError(f"nothing to import: the source has no records in splits {cfg.splits}")
        store_id, store_name = resolve_store(client, cfg)
        present = existing_read_sets(client, store_id, {f"{s.entry.task}:{s.entry.split}" for s in shards})
        new: list[_Shard] = []
        for shard in shards:
            item = present.get(shard.entry.name)
            if item is not None:
                shard.entry.status, shard.entry.read_set_id = "existing", item["id"]
                if item.get("status") != "ACTIVE":
                    shard.entry.message = f"read set is {item.get('status')}"
            else:
                new.append(shard)
        log.info("sequence store %s: %d read set(s) already present, %d to import",
                 store_id, len(shards) - len(new), len(new))
        job_ids: list[str] = []
        if new:
            uris = upload(cfg, new)
            jobs = start_imports(client, cfg, store_id, [s.entry for s in new], uris)
            for job_id, batch in jobs:
                job_ids.append(job_id)
                _apply_job_result(wait_for_import(client, cfg, store_id, job_id), batch)
        entries = [s.entry for s in shards]
        result = ImportResult(store_id, store_name, entries, class_names, None, skipped, job_ids)
        result.manifest_path = write_manifest(result, Path(cfg.manifest))
        for entry in result.failed:
            log.error("import failed: %s: %s", entry.name, entry.message)
        return result
    finally:
        if not cfg.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def write_manifest(result: ImportResult, path: Path) -> Path:
    """The manifest: store, class names and one entry per read set (no credentials, roles or endpoints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": "raycad-healthomics-manifest/1",
        "store_id": result.store_id,
        "store_name": result.store_name,
        "class_names": result.class_names,
        "import_jobs": result.job_ids,
        "skipped": result.skipped,
        "read_sets": [asdict(e) for e in result.entries],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
