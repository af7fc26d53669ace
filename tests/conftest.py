"""Shared pytest fixtures: the ../shared fixtures folder, a local Ray instance and a local S3 endpoint.

Real parts only: `ray_local` starts a private Ray instance for the test session and `s3_server` runs
``moto_server`` on 127.0.0.1 at a free port (stopped at the end of the session).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Tests never talk to real AWS: fake credentials are set before anything (Ray workers included) starts,
# so every process of the session sees the same ones as the moto endpoint.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
for _var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_OMICS"):
    os.environ.pop(_var, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"expected the shared fixtures folder at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray instance for the whole test session (2 logical CPUs, like this machine)."""
    import ray

    from raycad.runtime import init_ray

    init_ray(num_cpus=int(os.environ.get("RAYCAD_TEST_CPUS", "2")))
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def run_moto_server(env: dict[str, str] | None = None):
    """Run ``moto_server`` on 127.0.0.1 at a free port; yields its URL and stops it on exit."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint (moto_server) on loopback; yields its URL (fake credentials are set above)."""
    with run_moto_server() as url:
        yield url
