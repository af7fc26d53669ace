"""Stream HealthOmics read sets into Ray Data: one read task per read-set part, rows {sequence, label, id}.

On the driver, `HealthOmicsDatasource` only lists the ACTIVE read sets that match the filters
(``ListReadSets``) and reads their metadata (``GetReadSetMetadata`` -> ``files.source1.totalParts``); the
sequence bytes are fetched inside the Ray read tasks, part by part (``GetReadSet(partNumber=...)``, or byte
ranges of ``files.source1.s3Access.s3Uri`` through the S3 filesystem with ``read_path="s3"``). Each task
turns the records its part owns (see `raycad.data.healthomics.parts`) into rows with `raycad.data.fastx`.

Labels (``label_policy``): ``"header"`` reads ``label=<int>`` from each read's header (what
`import_to_sequence_store` writes); ``"sample_id"`` maps the read set's sampleId through ``class_names``
(an integer sampleId is taken as is); ``"manifest"`` takes each read set's label from an import manifest;
``"none"`` gives no labels; ``"auto"`` uses the header when it has a label, else the read set's label from
the manifest or its sampleId. A read left without a label has a null one: `raycad.data.sources.read_sequences`
(the way a config reads ``healthomics://`` URIs) cleans the records by the same contract as files, so it is
reported (or skipped and counted) as ``missing_label`` like any other record.

URIs: ``healthomics://<sequenceStoreId>?sampleId=..&subjectId=..&name=..&readSetId=..&label=..&read=s3``
(every query key optional; ``readSetId`` may repeat).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
from botocore.exceptions import ClientError
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from raycad.data.healthomics.client import HealthOmicsError, OmicsConnection, explain, omics_client
from raycad.data.healthomics.parts import iter_owned_fastq
from raycad.data.records import SEQUENCE_SCHEMA
from raycad.runtime import get_logger

if TYPE_CHECKING:
    import ray.data

LabelPolicy = Literal["auto", "header", "sample_id", "manifest", "none"]
ReadPath = Literal["api", "s3"]
SCHEME = "healthomics"
_LABEL_RE = re.compile(r"(?:^|\s)label=(-?\d+)(?:\s|$)")
_GZIP_RATIO = 3.5  # rough FASTQ text / gzip size ratio, for Ray's memory estimates only

log = get_logger("raycad.data.healthomics")


# ---- URIs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadSetQuery:
    """Which read sets to stream: a store and optional ListReadSets filters."""

    store_id: str
    sample_id: str | None = None
    subject_id: str | None = None
    name: str | None = None
    read_set_ids: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    """Other query keys of a URI (``label``, ``read``, ``classes``), for `read_healthomics`."""

    def filters(self) -> dict[str, str]:
        out = {"sampleId": self.sample_id, "subjectId": self.subject_id, "name": self.name}
        return {k: v for k, v in out.items() if v}

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.filters().items()]
        parts += [f"readSetId={i}" for i in self.read_set_ids]
        return f"store {self.store_id}" + (f" ({', '.join(parts)})" if parts else "")


_QUERY_KEYS = {"sampleId": "sample_id", "subjectId": "subject_id", "name": "name"}
_OPTION_KEYS = ("label", "read", "classes")


def parse_healthomics_uri(uri: str) -> ReadSetQuery:
    """``healthomics://<storeId>[/<readSetId>]?sampleId=..&subjectId=..&name=..&readSetId=..`` -> query."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"not a HealthOmics URI: {uri!r} (expected healthomics://<sequenceStoreId>?...)")
    store_id = parts.netloc
    if not store_id.isdigit():
        raise ValueError(f"{uri!r}: the sequence store id must be digits, got {store_id!r}")
    query = parse_qs(parts.query, keep_blank_values=False, strict_parsing=False)
    unknown = set(query) - set(_QUERY_KEYS) - {"readSetId", *_OPTION_KEYS}
    if unknown:
        raise ValueError(f"{uri!r}: unknown query keys {sorted(unknown)}; known: "
                         f"{sorted([*_QUERY_KEYS, 'readSetId', *_OPTION_KEYS])}")
    fields = {attr: query[key][-1] for key, attr in _QUERY_KEYS.items() if key in query}
    ids = list(query.get("readSetId", []))
    if parts.path.strip("/"):
        ids.append(parts.path.strip("/"))
    options = {key: query[key][-1] for key in _OPTION_KEYS if key in query}
    return ReadSetQuery(store_id, read_set_ids=tuple(ids), options=options, **fields)


# ---- planning (driver) -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadSetPart:
    """One part of one file of a read set: the unit of work of a read task (small, picklable)."""

    store_id: str
    read_set_id: str
    name: str
    file: str  # SOURCE1 / SOURCE2
    part: int  # 0-based
    num_parts: int
    part_size: int | None
    content_length: int | None
    s3_uri: str | None
    default_label: int | None
    """The read set's label from the manifest / sampleId (None when unknown)."""

    @property
    def where(self) -> str:
        return f"read set {self.read_set_id} ({self.name}) {self.file.lower()} part {self.part + 1}/{self.num_parts}"


def load_manifest(path: str | Path) -> dict[str, Any]:
    """An import manifest written by `import_to_sequence_store`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"HealthOmics manifest not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON manifest: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("read_sets"), list):
        return data
    raise ValueError(f"{path}: not a raycad HealthOmics manifest (no 'read_sets' list)")


class HealthOmicsDatasource(Datasource):
    """A Ray Data datasource over the FASTQ read sets of one HealthOmics sequence store.

    Args:
        query: the store and ListReadSets filters (`parse_healthomics_uri` builds one from a URI).
        label_policy: where labels come from (see the module docstring).
        class_names: class names in label-id order, to map sampleIds to labels.
        manifest: an import manifest (path or loaded dict) giving each read set's label and class names.
        read_path: ``"api"`` (GetReadSet parts) or ``"s3"`` (ranges of the read set's S3 access URI).
        on_archived: ``"error"`` (default) or ``"skip"`` read sets that match but are ARCHIVED.
        connection: region / endpoints / retry settings.
        concurrency: read tasks expected to run at once (default: the cluster's CPUs), to share the quota.
    """

    def __init__(self, query: ReadSetQuery, *, label_policy: LabelPolicy = "auto",
                 class_names: list[str] | None = None, manifest: str | Path | dict | None = None,
                 read_path: ReadPath = "api", on_archived: Literal["error", "skip"] = "error",
                 connection: OmicsConnection | None = None, concurrency: int | None = None) -> None:
        super().__init__()
        if label_policy not in ("auto", "header", "sample_id", "manifest", "none"):
            raise ValueError(f"unknown label_policy {label_policy!r}")
        if read_path not in ("api", "s3"):
            raise ValueError(f"unknown read_path {read_path!r} (api or s3)")
        self.query = query
        self.label_policy = label_policy
        self.read_path = read_path
        self.on_archived = on_archived
        self.connection = connection or OmicsConnection()
        self.concurrency = concurrency
        self.manifest = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
        if label_policy == "manifest" and self.manifest is None:
            raise ValueError("label_policy='manifest' needs a manifest")
        self.class_names = list(class_names or (self.manifest or {}).get("class_names") or [])
        self._parts: list[ReadSetPart] | None = None
        self.skipped: dict[str, int] = {}

    # -- listing
    def _list(self, client, status: str) -> list[dict]:
        query = self.query
        request: dict[str, Any] = {"sequenceStoreId": query.store_id,
                                   "filter": {"status": status, **query.filters()}}
        try:
            items = [item for page in client.get_paginator("list_read_sets").paginate(**request)
                     for item in page["readSets"]]
        except ClientError as err:
            raise explain(err, f"list the read sets of sequence store {query.store_id}") from None
        if query.read_set_ids:
            items = [item for item in items if item["id"] in query.read_set_ids]
        return items

    def read_sets(self) -> list[dict]:
        """The ACTIVE read sets to stream (errors on ARCHIVED ones unless ``on_archived="skip"``)."""
        client = omics_client(self.connection)
        active = self._list(client, "ACTIVE")
        archived = self._list(client, "ARCHIVED")
        if archived:
            names = ", ".join(f"{r['id']} ({r.get('name', '?')})" for r in archived[:5])
            if self.on_archived == "error":
                raise HealthOmicsError(
                    f"HealthOmics: {len(archived)} read set(s) in {self.query.describe()} are ARCHIVED and cannot "
                    f"be streamed: {names}{' ...' if len(archived) > 5 else ''}. Activate them first "
                    f"(start_read_set_activation_job) or pass on_archived='skip'.")
            self.skipped["archived"] = len(archived)
            log.warning("skipping %d ARCHIVED read set(s) in %s: %s", len(archived), self.query.describe(), names)
        missing = set(self.query.read_set_ids) - {r["id"] for r in active} - {r["id"] for r in archived}
        if missing:
            raise HealthOmicsError(f"HealthOmics: read set(s) {sorted(missing)} not found as ACTIVE in "
                                   f"{self.query.describe()}")
        if not active:
            raise HealthOmicsError(f"HealthOmics: no ACTIVE read sets in {self.query.describe()}")
        return sorted(active, key=lambda r: (r.get("name") or "", r["id"]))

    def plan(self) -> list[ReadSetPart]:
        """Every part of every FASTQ file of the selected read sets (cached; control-plane calls only)."""
        if self._parts is not None:
            return self._parts
        client = omics_client(self.connection)
        manifest_labels = {r["read_set_id"]: r.get("label") for r in (self.manifest or {}).get("read_sets", [])}
        parts: list[ReadSetPart] = []
        for item in self.read_sets():
            rs_id = item["id"]
            try:
                meta = client.get_read_set_metadata(sequenceStoreId=self.query.store_id, id=rs_id)
            except ClientError as err:
                raise explain(err, f"read the metadata of read set {rs_id}") from None
            name = meta.get("name") or rs_id
            if meta.get("fileType") != "FASTQ":
                raise HealthOmicsError(f"HealthOmics: read set {rs_id} ({name}) is {meta.get('fileType')}; "
                                       f"only FASTQ read sets can be streamed (filter by name/sampleId)")
            label = self._read_set_label(rs_id, name, meta.get("sampleId"), manifest_labels)
            files = meta.get("files") or {}
            for file_key in ("source1", "source2"):
                info = files.get(file_key)
                if not info:
                    continue
                total = int(info.get("totalParts") or 0)
                if total < 1:
                    raise HealthOmicsError(f"HealthOmics: read set {rs_id} ({name}) {file_key} has no parts "
                                           f"(totalParts={info.get('totalParts')})")
                s3_uri = (info.get("s3Access") or {}).get("s3Uri")
                if self.read_path == "s3" and not s3_uri:
                    raise HealthOmicsError(f"HealthOmics: read set {rs_id} ({name}) has no S3 access URI; "
                                           f"use read_path='api'")
                for k in range(total):
                    parts.append(ReadSetPart(self.query.store_id, rs_id, name, file_key.upper(), k, total,
                                             info.get("partSize"), info.get("contentLength"), s3_uri, label))
        self._parts = parts
        return parts

    def _read_set_label(self, rs_id: str, name: str, sample_id: str | None,
                        manifest_labels: dict[str, int | None]) -> int | None:
        policy = self.label_policy
        if policy in ("header", "none"):
            return None
        if rs_id in manifest_labels and manifest_labels[rs_id] is not None:
            return int(manifest_labels[rs_id])
        if policy == "manifest":
            raise HealthOmicsError(f"HealthOmics: read set {rs_id} ({name}) is not in the manifest")
        if sample_id is not None:
            if sample_id in self.class_names:
                return self.class_names.index(sample_id)
            if sample_id.lstrip("-").isdigit():
                return int(sample_id)
        if policy == "sample_id":
            raise HealthOmicsError(
                f"HealthOmics: read set {rs_id} ({name}): sampleId {sample_id!r} is not one of the class names "
                f"{self.class_names} (pass class_names, or a manifest)")
        return None

    # -- Ray Datasource API
    def get_name(self) -> str:
        return "HealthOmics"

    def estimate_inmemory_data_size(self) -> int | None:
        sizes = [p.part_size or p.content_length for p in self.plan()]
        if any(s is None for s in sizes):
            return None
        return int(sum(sizes) * _GZIP_RATIO)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None, **kwargs: Any) -> list[ReadTask]:
        """One read task per read-set part, whatever ``parallelism`` asks (parts are the unit of parallel I/O)."""
        parts = self.plan()
        # Share the GetReadSet quota among the tasks that can run at once.
        concurrency = max(1, min(len(parts), self.concurrency or _cluster_cpus()))
        connection = self.connection.with_tps(self.connection.get_read_set_tps / concurrency)
        tasks = []
        for spec in parts:
            size = spec.part_size or spec.content_length
            meta = BlockMetadata(num_rows=None, size_bytes=int(size * _GZIP_RATIO) if size else None,
                                 exec_stats=None, input_files=(_part_uri(spec),))
            read = functools.partial(_read_part, spec, connection, self.label_policy, self.read_path)
            tasks.append(ReadTask(read, meta, schema=SEQUENCE_SCHEMA, per_task_row_limit=per_task_row_limit))
        return tasks


def _cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1


def _part_uri(spec: ReadSetPart) -> str:
    return f"{SCHEME}://{spec.store_id}/{spec.read_set_id}?file={spec.file}&part={spec.part + 1}"


# ---- reading (inside Ray tasks) --------------------------------------------------------------------------------


def _fetcher(spec: ReadSetPart, connection: OmicsConnection, read_path: ReadPath):
    """``fetch(k) -> bytes`` for the parts of ``spec``'s file, through GetReadSet or S3 ranges."""
    if read_path == "s3":
        from raycad.storage import filesystem, is_s3

        if not is_s3(spec.s3_uri or ""):
            raise HealthOmicsError(f"HealthOmics: {spec.where}: not an S3 URI: {spec.s3_uri!r}")
        fs, path, _ = filesystem(spec.s3_uri, connection.s3_endpoint_url, connection.region or "us-east-1")
        handle = fs.open_input_file(path)
        size = handle.size()
        part_size = spec.part_size or math.ceil(size / spec.num_parts)

        def fetch_s3(k: int) -> bytes:
            return handle.read_at(max(0, min(part_size, size - k * part_size)), k * part_size)

        return fetch_s3
    client = omics_client(connection)

    def fetch_api(k: int) -> bytes:
        try:
            response = client.get_read_set(sequenceStoreId=spec.store_id, id=spec.read_set_id,
                                           file=spec.file, partNumber=k + 1)
            return response["payload"].read()
        except ClientError as err:
            raise explain(err, f"get {spec.where.rsplit(' part ', 1)[0]} part {k + 1}/{spec.num_parts}") from None

    return fetch_api


def _read_part(spec: ReadSetPart, connection: OmicsConnection, label_policy: LabelPolicy,
               read_path: ReadPath) -> Iterator[pa.Table]:
    """The rows of the records that ``spec``'s part owns, one Arrow table per ~4 MiB of FASTQ."""
    from raycad.data.fastx import read_fastq

    fetch = _fetcher(spec, connection, read_path)
    for chunk in iter_owned_fastq(fetch, spec.part, spec.num_parts, where=spec.where):
        sequences, labels, ids = [], [], []
        for record in read_fastq(chunk, name=spec.where):
            sequences.append(record.sequence)
            labels.append(_record_label(record, spec, label_policy))
            ids.append(record.id)
        yield pa.table([pa.array(sequences, pa.string()), pa.array(labels, pa.int64()),
                        pa.array(ids, pa.string())], schema=SEQUENCE_SCHEMA)


def _record_label(record, spec: ReadSetPart, policy: LabelPolicy) -> int | None:
    """The header's ``label=<int>``, else the read set's label; None when neither applies (the record
    contract, `raycad.data.records.clean`, then reports a missing label)."""
    if policy == "none":
        return None
    if policy in ("auto", "header"):
        match = _LABEL_RE.search(record.description)
        if match:
            return int(match.group(1))
        if policy == "header":
            return None
    return spec.default_label


# ---- entry point -----------------------------------------------------------------------------------------------


def read_healthomics(source: str | ReadSetQuery, *, sample_id: str | None = None, subject_id: str | None = None,
                     name: str | None = None, label_policy: LabelPolicy | None = None,
                     class_names: list[str] | None = None, manifest: str | Path | dict | None = None,
                     read_path: ReadPath | None = None, on_archived: Literal["error", "skip"] = "error",
                     connection: OmicsConnection | None = None, region: str | None = None,
                     endpoint_url: str | None = None, s3_endpoint_url: str | None = None,
                     concurrency: int | None = None, num_cpus: float | None = None,
                     runtime_env: dict[str, Any] | None = None) -> ray.data.Dataset:
    """A lazy Ray Dataset of ``{sequence, label, id}`` rows from HealthOmics read sets.

    ``source`` is a ``healthomics://`` URI, a sequence store id, or a `ReadSetQuery`; keyword filters
    and options override those in the URI. ``concurrency`` caps the read tasks running at once (and so
    gives each a larger share of the GetReadSet quota); ``num_cpus`` / ``runtime_env`` go to the read tasks.
    Nothing is read until the dataset executes.
    """
    import ray.data

    if isinstance(source, ReadSetQuery):
        query = source
    elif source.startswith(f"{SCHEME}://"):
        query = parse_healthomics_uri(source)
    else:
        query = parse_healthomics_uri(f"{SCHEME}://{source}")
    overrides = {"sample_id": sample_id, "subject_id": subject_id, "name": name}
    query = ReadSetQuery(query.store_id, read_set_ids=query.read_set_ids, options=query.options,
                         **{k: v if v is not None else getattr(query, k) for k, v in overrides.items()})
    if class_names is None and "classes" in query.options:
        class_names = [c for c in query.options["classes"].split(",") if c]
    if connection is None:  # endpoints from the environment are resolved here, on the driver, for every task
        connection = OmicsConnection(
            region=region, s3_endpoint_url=s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3"),
            endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_OMICS") or os.environ.get("AWS_ENDPOINT_URL"))
    datasource = HealthOmicsDatasource(
        query, label_policy=label_policy or query.options.get("label", "auto"),  # type: ignore[arg-type]
        class_names=class_names, manifest=manifest, read_path=read_path or query.options.get("read", "api"),
        on_archived=on_archived, connection=connection, concurrency=concurrency)
    task_args = {"concurrency": concurrency, "num_cpus": num_cpus, "runtime_env": runtime_env}
    return ray.data.read_datasource(datasource, **{k: v for k, v in task_args.items() if v is not None})
