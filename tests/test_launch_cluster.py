"""Real multi-process Ray clusters on this machine (slow): the SageMaker bootstrap with two simulated hosts,
and ``jobs/finetune.py`` submitted to a ``ray start --head`` cluster through `JobSubmissionClient`.

Both clusters run with Ray token authentication on (a fresh token per test). Each test stops only the Ray
processes it started (SIGTERM to its own ``ray start --block``): ``ray stop`` would kill every Ray
instance on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port, wait_for_port

from raycad.launch.bootstrap import ray_executable, stop_process

REPO = Path(__file__).resolve().parents[1]

TINY = ["--set", "model.overrides.n_layer=1", "--set", "model.overrides.d_model=16", "--set", "data.limit=64",
        "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=32",
        "--set", "run.export_model=false"]


@pytest.fixture
def ray_tmp():
    """A short temp dir for Ray sessions (its socket paths must stay under 108 bytes; pytest's are long)."""
    path = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stop_session(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Stop a process started with start_new_session=True, then anything left in its process group."""
    stop_process(proc, timeout=timeout)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cluster_env(token: str) -> dict[str, str]:
    """Environment of every process of a test cluster: its own token, never a cluster from outside."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    return env


def read_results(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs_run"] == 1
    assert results["test_metrics"]["test_n"] > 0 and 0.0 <= results["test_metrics"]["test_accuracy"] <= 1.0
    return results


@pytest.mark.slow
def test_sagemaker_bootstrap_two_hosts_form_one_cluster(tmp_path, ray_tmp):
    """Two bootstrap processes (algo-1 head, algo-2 worker) on 127.0.0.1 run a tiny fine-tune and exit 0."""
    port, signal_port, dashboard = free_port(), free_port(), free_port()
    env = cluster_env(secrets.token_hex(16))
    out = tmp_path / "model"
    job_args = [*TINY, "--set", "scaling.num_workers=2", "--set", f"run.output_dir={out}",
                "--set", "run.name=sm"]
    procs = {}
    started = time.monotonic()
    for host in ("algo-1", "algo-2"):
        config = tmp_path / f"resourceconfig-{host}.json"
        config.write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2"]}))
        ray_args = (f"--num-cpus=1 --temp-dir={ray_tmp / host} --object-store-memory=150000000 "
                    "--dashboard-agent-listen-port=0")
        cmd = [sys.executable, "-m", "raycad.launch.bootstrap", "--resource-config", str(config),
               "--raycad_job", "finetune", "--raycad_args", shlex.join(job_args), "--code-dir", str(REPO),
               "--port", str(port), "--signal-port", str(signal_port),
               "--dashboard-port", str(dashboard), "--head-ip", "127.0.0.1",
               "--node-ip", "127.0.0.1", "--ray-start-args", ray_args, "--join-timeout", "180"]
        with open(tmp_path / f"{host}.log", "w") as log:  # the child keeps its own copy of the descriptor
            procs[host] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
    codes = {}
    try:
        for host, proc in procs.items():
            codes[host] = proc.wait(timeout=900)
    finally:
        for proc in procs.values():
            stop_session(proc)
    elapsed = time.monotonic() - started
    logs = {h: (tmp_path / f"{h}.log").read_text() for h in procs}
    assert codes == {"algo-1": 0, "algo-2": 0}, "\n\n".join(f"== {h}\n{t[-4000:]}" for h, t in logs.items())
    assert "2/2 Ray nodes joined" in logs["algo-1"] and "head finished" in logs["algo-2"]
    read_results(out / "sm")
    print(f"bootstrap: 2 hosts, tiny fine-tune, both exited 0 in {elapsed:.1f}s")


@pytest.mark.slow
def test_finetune_job_submitted_to_a_local_cluster(tmp_path, ray_tmp):
    """``ray start --head`` on 127.0.0.1 + JobSubmissionClient -> SUCCEEDED and a results file."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    port, dashboard = free_port(), free_port()
    token = secrets.token_hex(16)
    env = cluster_env(token)
    started = time.monotonic()
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(
            [ray_executable(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", f"--temp-dir={ray_tmp}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--dashboard-agent-listen-port=0",
             "--object-store-memory=200000000", "--disable-usage-stats"],
            env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for_port(dashboard, timeout=120, proc=head)
        address = f"http://127.0.0.1:{dashboard}"
        with pytest.raises(Exception, match="(?i)auth|token|401|403"):
            JobSubmissionClient(address, headers={"Authorization": "Bearer wrong-token"})
        client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
        out = tmp_path / "runs"
        args = [*TINY, "--set", "scaling.num_workers=1", "--set", f"run.output_dir={out}",
                "--set", "run.name=job"]
        submit_deadline = time.monotonic() + 180
        while True:  # the head's job agent registers a little after the dashboard opens
            try:
                job_id = client.submit_job(
                    entrypoint=shlex.join(["python", "jobs/finetune.py", *args]),
                    runtime_env={"working_dir": str(REPO),
                                 "excludes": [".git", "raycad_runs", "**/__pycache__", ".pytest_cache", "bench"]})
                break
            except RuntimeError as err:
                if "No available agent" not in str(err) or time.monotonic() > submit_deadline:
                    raise
                time.sleep(2)
        deadline = time.monotonic() + 900
        while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                 JobStatus.STOPPED):
            assert time.monotonic() < deadline, "job did not finish in time"
            time.sleep(2)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
        read_results(out / "job")
    finally:
        stop_session(head)
    assert head.returncode is not None
    print(f"job submission: cluster up, job SUCCEEDED, cluster stopped in {time.monotonic() - started:.1f}s")
