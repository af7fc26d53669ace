"""boto3 clients for AWS HealthOmics and S3 with raycad's retry, rate-limit and error conventions.

`OmicsConnection` is the picklable description of where to connect (region, endpoint overrides, retry and
rate settings; never credentials, which come from the standard AWS chain in each process). Clients use
botocore's *adaptive* retry mode (client-side rate limiting that backs off on throttling) and, on top, a
per-process token bucket that keeps ``GetReadSet`` under its service quota (30 TPS) and the control-plane
calls under 5 TPS. With a custom endpoint (``endpoint_url``, or the standard ``AWS_ENDPOINT_URL_OMICS`` /
``AWS_ENDPOINT_URL`` environment variables) the omics host prefixes (``control-storage-``,
``storage-``) are not injected, so a single local endpoint can serve every operation.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from raycad import storage

GET_READ_SET_TPS = 30.0
CONTROL_TPS = 5.0


class HealthOmicsError(RuntimeError):
    """A HealthOmics request or import failed; the message says what, where and what to do about it."""


@dataclass(frozen=True)
class OmicsConnection:
    """Where and how to call HealthOmics and S3 (no secrets: credentials come from the AWS chain)."""

    region: str | None = None
    endpoint_url: str | None = None
    """Override of the omics endpoint (a VPC endpoint, or a local stand-in in tests)."""
    s3_endpoint_url: str | None = None
    max_attempts: int = 10
    """Total attempts per request under botocore's adaptive retry mode."""
    get_read_set_tps: float = GET_READ_SET_TPS
    """Per-process cap on GetReadSet calls per second (the datasource divides the quota among its tasks)."""
    control_tps: float = CONTROL_TPS

    def with_tps(self, get_read_set_tps: float) -> OmicsConnection:
        return OmicsConnection(self.region, self.endpoint_url, self.s3_endpoint_url, self.max_attempts,
                               get_read_set_tps, self.control_tps)


class _TokenBucket:
    """A minimal thread-safe rate limiter: at most ``rate`` acquisitions per second, bursts of ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = max(rate, 1e-3)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            wait = (1.0 - self.tokens) / self.rate if self.tokens < 1.0 else 0.0
            self.tokens -= 1.0
        if wait > 0:
            time.sleep(wait)


_CLIENTS: dict[tuple[str, OmicsConnection], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _boto_config(conn: OmicsConnection, **extra: Any) -> BotoConfig:
    return BotoConfig(retries={"mode": "adaptive", "max_attempts": conn.max_attempts},
                      user_agent_extra="raycad", **extra)


def omics_client(conn: OmicsConnection, *, cached: bool = True):
    """An ``omics`` client for ``conn`` (one per process and connection unless ``cached=False``)."""
    key = ("omics", conn)
    with _CLIENTS_LOCK:
        if cached and key in _CLIENTS:
            return _CLIENTS[key]
        endpoint = conn.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_OMICS") or os.environ.get("AWS_ENDPOINT_URL")
        config = _boto_config(conn, inject_host_prefix=endpoint is None)
        client = boto3.session.Session().client("omics", region_name=conn.region, endpoint_url=endpoint,
                                                config=config)
        data_bucket, control_bucket = _TokenBucket(conn.get_read_set_tps), _TokenBucket(conn.control_tps)

        def throttle(model, **_: Any) -> None:
            (data_bucket if model.name == "GetReadSet" else control_bucket).acquire()

        client.meta.events.register("before-call.omics", throttle)
        if cached:
            _CLIENTS[key] = client
        return client


def s3_client(conn: OmicsConnection):
    """An S3 client honouring ``conn.s3_endpoint_url`` and the same retry settings."""
    key = ("s3", conn)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = storage.s3_client(conn.s3_endpoint_url, conn.region, _boto_config(conn))
        return _CLIENTS[key]


def error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def explain(err: ClientError, action: str) -> HealthOmicsError:
    """A `HealthOmicsError` for a failed call, naming the action and the likely fix."""
    code = error_code(err)
    message = err.response.get("Error", {}).get("Message", "") or str(err)
    hint = {
        "ResourceNotFoundException": "check the id and the region",
        "AccessDeniedException": "the AWS identity lacks permission for this HealthOmics action "
                                 "(or the import role cannot read the staging S3 prefix)",
        "AccessDenied": "the AWS identity lacks permission for this S3 action",
        "ThrottlingException": "the service quota was exceeded even after adaptive retries; lower the parallelism",
        "ValidationException": "the request was rejected as invalid",
        "ServiceQuotaExceededException": "an account quota is reached (e.g. sequence stores or import jobs)",
    }.get(code, "")
    text = f"HealthOmics: cannot {action}: {code or 'error'}: {message}"
    return HealthOmicsError(text + (f" ({hint})" if hint else ""))
