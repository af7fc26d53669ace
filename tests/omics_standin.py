"""A loopback stand-in for the AWS HealthOmics storage routes raycad uses (moto has no ``omics``).

It speaks the service's REST-JSON protocol as botocore's ``omics`` model defines it (routes, query
parameters, response members, ISO-8601 timestamps, ``x-amzn-ErrorType`` errors), so the real boto3 client
talks to it over HTTP (with ``endpoint_url`` and ``Config(inject_host_prefix=False)``). Behind it, a real S3
endpoint (moto_server) holds the staging files an import reads and the read sets' S3 access copies.

Routes: CreateSequenceStore, GetSequenceStore, ListSequenceStores, StartReadSetImportJob,
GetReadSetImportJob, ListReadSetImportJobs, ListReadSets, GetReadSetMetadata, GetReadSet.

Behaviour worth knowing in tests:
- a new store is CREATING until its first GetSequenceStore; an import job is SUBMITTED, then IN_PROGRESS on
  the first poll, then finished on the second (each source imported from S3, or FAILED with a message when
  its object is missing or is not gzip FASTQ);
- read set files are served in parts of ``part_size`` bytes, as uploaded;
- a job whose role ARN ends in ``/no-s3-access`` fails every source with an access-denied message;
- requests signed with an access key in ``denied_keys`` get AccessDeniedException;
- ``throttle_every=n`` answers every n-th GetReadSet with ThrottlingException (429);
- counters in ``calls`` (per operation) and ``max_concurrent_get`` record what the client did.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import re
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import boto3
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ACCOUNT = "123456789012"
REGION = "us-east-1"
ACCESS_BUCKET = "omics-standin-access"


class _SourceFailed(Exception):
    """One import source failed; the message becomes its statusMessage."""


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _ReadSet:
    id: str
    store_id: str
    name: str
    subject_id: str
    sample_id: str
    description: str | None
    tags: dict[str, str]
    data: bytes
    reads: int
    bases: int
    job_id: str
    status: str = "ACTIVE"
    created: str = field(default_factory=_now)

    @property
    def arn(self) -> str:
        return f"arn:aws:omics:{REGION}:{ACCOUNT}:sequenceStore/{self.store_id}/readSet/{self.id}"

    def list_item(self) -> dict[str, Any]:
        item = {"id": self.id, "arn": self.arn, "sequenceStoreId": self.store_id, "subjectId": self.subject_id,
                "sampleId": self.sample_id, "status": self.status, "name": self.name, "fileType": "FASTQ",
                "creationTime": self.created, "creationType": "IMPORT",
                "sequenceInformation": {"totalReadCount": self.reads, "totalBaseCount": self.bases}}
        if self.description:
            item["description"] = self.description
        return item


class OmicsStandIn:
    """The stand-in's state and WSGI app; `start()` serves it on 127.0.0.1 in a background thread."""

    def __init__(self, s3_endpoint: str, *, part_size: int = 64 << 10, denied_keys: tuple[str, ...] = (),
                 throttle_every: int = 0) -> None:
        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
        self.part_size = part_size
        self.denied_keys = set(denied_keys)
        self.throttle_every = throttle_every
        self.stores: dict[str, dict[str, Any]] = {}
        self.read_sets: dict[str, _ReadSet] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_tokens: dict[str, str] = {}
        self.calls: dict[str, int] = {}
        self.max_concurrent_get = 0
        self._concurrent_get = 0
        self._ids = itertools.count(1_000_000_001)
        self._lock = threading.RLock()
        self._server = None
        self.url = ""
        self.routes = Map([
            Rule("/sequencestore", methods=["POST"], endpoint="CreateSequenceStore"),
            Rule("/sequencestore/<id>", methods=["GET"], endpoint="GetSequenceStore"),
            Rule("/sequencestores", methods=["POST"], endpoint="ListSequenceStores"),
            Rule("/sequencestore/<sid>/importjob", methods=["POST"], endpoint="StartReadSetImportJob"),
            Rule("/sequencestore/<sid>/importjob/<id>", methods=["GET"], endpoint="GetReadSetImportJob"),
            Rule("/sequencestore/<sid>/importjobs", methods=["POST"], endpoint="ListReadSetImportJobs"),
            Rule("/sequencestore/<sid>/readsets", methods=["POST"], endpoint="ListReadSets"),
            Rule("/sequencestore/<sid>/readset/<id>/metadata", methods=["GET"], endpoint="GetReadSetMetadata"),
            Rule("/sequencestore/<sid>/readset/<id>", methods=["GET"], endpoint="GetReadSet"),
        ])

    # ---- serving ---------------------------------------------------------------------------------------------
    def start(self) -> OmicsStandIn:
        self.s3.create_bucket(Bucket=ACCESS_BUCKET)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wsgi(self, environ, start_response):
        request = Request(environ)
        try:
            endpoint, args = self.routes.bind_to_environ(environ).match()
        except Exception:  # noqa: BLE001 - any routing failure is an unknown operation
            return self._error(_Error(404, "UnknownOperationException", f"{request.method} {request.path}"))(
                environ, start_response)
        with self._lock:
            self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        try:
            self._authorize(request)
            body = json.loads(request.get_data() or b"{}") if request.method == "POST" else {}
            response = getattr(self, endpoint)(request, body, **args)
        except _Error as err:
            response = self._error(err)
        return response(environ, start_response)

    @staticmethod
    def _error(err: _Error) -> Response:
        return Response(json.dumps({"message": err.message}), status=err.status,
                        headers={"x-amzn-ErrorType": err.code, "Content-Type": "application/json"})

    @staticmethod
    def _json(data: dict[str, Any]) -> Response:
        return Response(json.dumps(data), status=200, content_type="application/json")

    def _authorize(self, request: Request) -> None:
        auth = request.headers.get("Authorization", "")
        match = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
        if not match or match.group(3) != "omics":
            raise _Error(403, "AccessDeniedException", "request is not SigV4-signed for the omics service")
        if match.group(1) in self.denied_keys:
            raise _Error(403, "AccessDeniedException",
                         f"User: arn:aws:iam::{ACCOUNT}:user/denied is not authorized to perform this action")

    def _new_id(self) -> str:
        with self._lock:
            return str(next(self._ids))

    def _store(self, sid: str) -> dict[str, Any]:
        store = self.stores.get(sid)
        if store is None:
            raise _Error(404, "ResourceNotFoundException", f"Sequence store {sid} not found")
        return store

    @staticmethod
    def _page(items: list[dict], request: Request, key: str) -> dict[str, Any]:
        size = int(request.args.get("maxResults", 100))
        start = int(request.args.get("nextToken", 0))
        out: dict[str, Any] = {key: items[start:start + size]}
        if start + size < len(items):
            out["nextToken"] = str(start + size)
        return out

    # ---- sequence stores ---------------------------------------------------------------------------------------
    def CreateSequenceStore(self, request: Request, body: dict) -> Response:
        if not body.get("name"):
            raise _Error(400, "ValidationException", "name is required")
        sid = self._new_id()
        store = {"id": sid, "arn": f"arn:aws:omics:{REGION}:{ACCOUNT}:sequenceStore/{sid}", "name": body["name"],
                 "creationTime": _now(), "status": "CREATING"}
        if body.get("description"):
            store["description"] = body["description"]
        self.stores[sid] = store
        return self._json(store)

    def GetSequenceStore(self, request: Request, body: dict, id: str) -> Response:
        store = self._store(id)
        response = dict(store)
        store["status"] = "ACTIVE"  # active from the next look on
        return self._json(response)

    def ListSequenceStores(self, request: Request, body: dict) -> Response:
        wanted = body.get("filter", {})
        items = [s for s in self.stores.values()
                 if all(s.get(k) == v for k, v in wanted.items() if k in ("name", "status"))]
        return self._json(self._page(items, request, "sequenceStores"))

    # ---- import jobs -------------------------------------------------------------------------------------------
    def StartReadSetImportJob(self, request: Request, body: dict, sid: str) -> Response:
        self._store(sid)
        sources = body.get("sources") or []
        if not body.get("roleArn", "").startswith("arn:"):
            raise _Error(400, "ValidationException", "roleArn must be an IAM role ARN")
        if not 1 <= len(sources) <= 100:
            raise _Error(400, "ValidationException", f"sources must hold 1 to 100 items, got {len(sources)}")
        token = body.get("clientToken")
        if token and token in self.job_tokens:
            job = self.jobs[self.job_tokens[token]]
        else:
            job = {"id": self._new_id(), "sequenceStoreId": sid, "roleArn": body["roleArn"], "status": "SUBMITTED",
                   "creationTime": _now(),
                   "sources": [{**s, "status": "NOT_STARTED"} for s in sources]}
            self.jobs[job["id"]] = job
            if token:
                self.job_tokens[token] = job["id"]
        return self._json({k: job[k] for k in ("id", "sequenceStoreId", "roleArn", "status", "creationTime")})

    def GetReadSetImportJob(self, request: Request, body: dict, sid: str, id: str) -> Response:
        with self._lock:
            job = self.jobs.get(id)
            if job is None or job["sequenceStoreId"] != sid:
                raise _Error(404, "ResourceNotFoundException", f"Import job {id} not found")
            response = json.loads(json.dumps(job))
            if job["status"] == "SUBMITTED":
                job["status"] = "IN_PROGRESS"
                for source in job["sources"]:
                    source["status"] = "IN_PROGRESS"
            elif job["status"] == "IN_PROGRESS":
                self._run_job(job)
        return self._json(response)

    def ListReadSetImportJobs(self, request: Request, body: dict, sid: str) -> Response:
        self._store(sid)
        status = body.get("filter", {}).get("status")
        items = [{k: j[k] for k in ("id", "sequenceStoreId", "roleArn", "status", "creationTime")}
                 for j in self.jobs.values() if j["sequenceStoreId"] == sid and status in (None, j["status"])]
        return self._json(self._page(items, request, "importJobs"))

    def _run_job(self, job: dict[str, Any]) -> None:
        for source in job["sources"]:
            try:
                read_set = self._import_source(job, source)
            except _SourceFailed as err:
                source["status"], source["statusMessage"] = "FAILED", str(err)
                continue
            source["status"], source["readSetId"] = "FINISHED", read_set.id
        failed = sum(s["status"] == "FAILED" for s in job["sources"])
        job["status"] = ("COMPLETED" if not failed else
                         "FAILED" if failed == len(job["sources"]) else "COMPLETED_WITH_FAILURES")
        if failed:
            job["statusMessage"] = f"{failed} of {len(job['sources'])} sources failed"
        job["completionTime"] = _now()

    def _import_source(self, job: dict[str, Any], source: dict[str, Any]) -> _ReadSet:
        uri = source["sourceFiles"]["source1"]
        if job["roleArn"].endswith("/no-s3-access"):
            raise _SourceFailed(f"Access denied: the role cannot read {uri}")
        bucket, _, key = uri[len("s3://"):].partition("/")
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            raise _SourceFailed(f"Source file {uri} was not found") from None
        except Exception as err:  # noqa: BLE001 - any S3 failure fails this source
            raise _SourceFailed(f"Cannot read {uri}: {type(err).__name__}") from None
        try:
            text = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise _SourceFailed(f"Invalid gzip in {uri}") from None
        lines = text.splitlines()
        if not lines or len(lines) % 4 or not all(lines[i].startswith(b"@") for i in range(0, len(lines), 4)):
            raise _SourceFailed(f"Invalid FASTQ in {uri}")
        read_set = _ReadSet(
            id=self._new_id(), store_id=job["sequenceStoreId"], name=source.get("name", ""),
            subject_id=source["subjectId"], sample_id=source["sampleId"], description=source.get("description"),
            tags=dict(source.get("tags", {})), data=data, reads=len(lines) // 4,
            bases=sum(len(lines[i]) for i in range(1, len(lines), 4)), job_id=job["id"])
        self.s3.put_object(Bucket=ACCESS_BUCKET, Key=self._access_key(read_set), Body=data)
        self.read_sets[read_set.id] = read_set
        return read_set

    @staticmethod
    def _access_key(read_set: _ReadSet) -> str:
        return f"{ACCOUNT}/sequenceStore/{read_set.store_id}/readSet/{read_set.id}/source1.fastq.gz"

    # ---- read sets ---------------------------------------------------------------------------------------------
    def _read_set(self, sid: str, id: str) -> _ReadSet:
        self._store(sid)
        read_set = self.read_sets.get(id)
        if read_set is None or read_set.store_id != sid:
            raise _Error(404, "ResourceNotFoundException", f"Read set {id} not found")
        return read_set

    def ListReadSets(self, request: Request, body: dict, sid: str) -> Response:
        self._store(sid)
        wanted = body.get("filter", {})
        attrs = {"name": "name", "status": "status", "sampleId": "sample_id", "subjectId": "subject_id"}
        items = [r.list_item() for r in self.read_sets.values() if r.store_id == sid
                 and all(getattr(r, attrs[k]) == v for k, v in wanted.items() if k in attrs)]
        return self._json(self._page(items, request, "readSets"))

    def GetReadSetMetadata(self, request: Request, body: dict, sid: str, id: str) -> Response:
        read_set = self._read_set(sid, id)
        item = read_set.list_item()
        item.pop("statusMessage", None)
        item["files"] = {"source1": {
            "totalParts": max(1, -(-len(read_set.data) // self.part_size)), "partSize": self.part_size,
            "contentLength": len(read_set.data),
            "s3Access": {"s3Uri": f"s3://{ACCESS_BUCKET}/{self._access_key(read_set)}"}}}
        return self._json(item)

    def GetReadSet(self, request: Request, body: dict, sid: str, id: str) -> Response:
        read_set = self._read_set(sid, id)
        with self._lock:
            self._concurrent_get += 1
            self.max_concurrent_get = max(self.max_concurrent_get, self._concurrent_get)
            count = self.calls["GetReadSet"]
        try:
            if self.throttle_every and count % self.throttle_every == 0:
                raise _Error(429, "ThrottlingException", "Rate exceeded")
            if request.args.get("file", "SOURCE1") != "SOURCE1":
                raise _Error(404, "ResourceNotFoundException", "the read set has no such file")
            part = int(request.args.get("partNumber", 0))
            total = max(1, -(-len(read_set.data) // self.part_size))
            if not 1 <= part <= total:
                raise _Error(416, "RangeNotSatisfiableException", f"part {part} of {total}")
            chunk = read_set.data[(part - 1) * self.part_size:part * self.part_size]
            return Response(chunk, status=200, content_type="application/octet-stream")
        finally:
            with self._lock:
                self._concurrent_get -= 1

    # ---- test helpers ------------------------------------------------------------------------------------------
    def set_status(self, read_set_id: str, status: str) -> None:
        self.read_sets[read_set_id].status = status
