"""Entrypoint inside a SageMaker training container: turn the job's hosts into one Ray cluster, run a job.

Every host of a SageMaker training job runs this same script. The hosts (``algo-1``, ``algo-2``, ...) come
from ``/opt/ml/input/config/resourceconfig.json`` (or ``SM_HOSTS`` / ``SM_CURRENT_HOST``); after sorting,
the first one is the head:

* the **head** runs ``ray start --head --block`` as a child process, waits until every host's node has
  joined, runs the raycad job (``jobs/<job>.py`` with ``RAY_ADDRESS`` pointing at the cluster) as a driver
  process, then tells the workers to leave, stops its own node and exits with the job's exit code;
* each **worker** waits for the head, runs ``ray start --address <head>:<port> --block`` as a child process
  and polls the head's small signal server (``--signal-port``). When the head answers ``done`` the worker
  stops its node and exits 0, so the training job ends cleanly on every host.

The signal server only ever *sends* one word (``running`` or ``done``) and reads nothing but a host name,
so it exposes nothing. Ray's token authentication is used when ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``
is set for every host; otherwise it is explicitly disabled so that all hosts agree (a SageMaker job's hosts
talk on the job's private network). Job outputs go where the job's arguments say (the launcher passes
``/opt/ml/model``, which SageMaker uploads to the job's S3 output path, and an ``s3://`` Ray storage path).

Run as a script from the unpacked source directory (``sagemaker_program``), it first installs raycad from
that directory when it is not importable yet; it needs nothing but the standard library until then.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RESOURCE_CONFIG = "/opt/ml/input/config/resourceconfig.json"
JOBS = ("finetune", "pretrain", "tune", "import_omics")


def log(message: str) -> None:
    """One timestamped line on stdout (SageMaker ships it to CloudWatch)."""
    print(f"[raycad.bootstrap {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- hosts -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostInfo:
    """This host's name and all hosts of the training job, sorted so every host agrees on the head."""

    current_host: str
    hosts: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.hosts[0]

    @property
    def is_head(self) -> bool:
        return self.current_host == self.head


def read_host_info(path: str | Path | None = None, env: dict[str, str] | None = None) -> HostInfo:
    """Hosts from SageMaker's resource config file, else from ``SM_HOSTS``/``SM_CURRENT_HOST``."""
    env = os.environ if env is None else env
    path = Path(path or env.get("RAYCAD_RESOURCE_CONFIG", RESOURCE_CONFIG))
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            current, hosts = data["current_host"], data["hosts"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a SageMaker resource config ({err!r})") from None
        source = str(path)
    elif "SM_HOSTS" in env and "SM_CURRENT_HOST" in env:
        try:
            hosts = json.loads(env["SM_HOSTS"])
        except json.JSONDecodeError as err:
            raise ValueError(f"SM_HOSTS is not a JSON list: {err}") from None
        current, source = env["SM_CURRENT_HOST"], "SM_HOSTS/SM_CURRENT_HOST"
    else:
        raise ValueError(f"no SageMaker host information: {path} does not exist and SM_HOSTS is unset")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ValueError(f"{source}: hosts must be a non-empty list of host names, got {hosts!r}")
    if current not in hosts:
        raise ValueError(f"{source}: current host {current!r} is not among the hosts {hosts}")
    return HostInfo(current_host=current, hosts=tuple(sorted(hosts)))


# ---- processes and ports ---------------------------------------------------------------------------------


def ray_executable() -> str:
    """The ``ray`` CLI of this Python environment."""
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def ray_env() -> dict[str, str]:
    """Environment for Ray processes: token auth on iff a token is provided, no inherited RAY_ADDRESS."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    has_token = bool(env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"))
    env["RAY_AUTH_MODE"] = "token" if has_token else "disabled"
    return env


def wait_for_port(host: str, port: int, timeout: float, what: str,
                  proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{what}: nothing listening on {host}:{port} after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM a ``ray start --block`` child (it then stops its node's processes), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SignalServer(socketserver.ThreadingTCPServer):
    """Answers every connection with ``running`` or ``done`` and records which hosts have seen ``done``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]):
        self.done = threading.Event()
        self.released: set[str] = set()
        super().__init__(address, _SignalHandler)


class _SignalHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: SignalServer = self.server  # type: ignore[assignment]
        host = self.rfile.readline(256).decode(errors="replace").strip()
        done = server.done.is_set()
        self.wfile.write(b"done\n" if done else b"running\n")
        if done and host:
            server.released.add(host)


def poll_signal(host: str, port: int, me: str) -> str | None:
    """The head's answer (``running``/``done``), or None when the head cannot be reached."""
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(me.encode() + b"\n")
            return sock.makefile().readline().strip() or None
    except OSError:
        return None


# ---- head and worker -------------------------------------------------------------------------------------


@dataclass
class BootstrapOptions:
    job: str
    job_args: list[str]
    code_dir: Path
    port: int = 6379
    signal_port: int = 6390
    dashboard_port: int = 8265
    head_ip: str | None = None
    node_ip: str | None = None
    ray_start_args: tuple[str, ...] = ()
    join_timeout: float = 900.0
    release_timeout: float = 120.0
    head_lost_timeout: float = 300.0


def job_command(opts: BootstrapOptions) -> list[str]:
    """``python <code_dir>/jobs/<job>.py <args>`` (a path ending in .py runs that script instead)."""
    script = Path(opts.job) if opts.job.endswith(".py") else opts.code_dir / "jobs" / f"{opts.job}.py"
    if not script.is_absolute():
        script = opts.code_dir / script
    if not script.is_file():
        raise FileNotFoundError(f"job script {script} not found (jobs: {', '.join(JOBS)} or a path to a .py)")
    return [sys.executable, str(script), *opts.job_args]


def wait_for_nodes(address: str, expected: int, timeout: float) -> None:
    """Block until ``expected`` alive nodes are in the cluster (checked through a short-lived driver)."""
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        deadline, seen = time.monotonic() + timeout, -1
        while True:
            alive = sum(1 for node in ray.nodes() if node.get("Alive"))
            if alive != seen:
                log(f"{alive}/{expected} Ray nodes joined")
                seen = alive
            if alive >= expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {alive} of {expected} hosts joined the Ray cluster in {timeout:.0f}s")
            time.sleep(1.0)
    finally:
        ray.shutdown()


def run_head(info: HostInfo, opts: BootstrapOptions) -> int:
    ip = opts.node_ip or socket.gethostbyname(info.current_host)
    address = f"{ip}:{opts.port}"
    # RAY_ADDRESS in the node's environment lets Ray's own helper processes (e.g. Ray Train's placement
    # group cleaner, which uses the state API) find this cluster even when a host runs other Ray instances.
    env = {**ray_env(), "RAY_ADDRESS": address}
    log(f"head {info.current_host} ({ip}) of {len(info.hosts)} host(s); auth mode {env['RAY_AUTH_MODE']}")
    server = SignalServer(("0.0.0.0" if opts.node_ip is None else ip, opts.signal_port))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    node = subprocess.Popen([ray_executable(), "start", "--head", "--block", f"--port={opts.port}",
                             f"--node-ip-address={ip}", "--include-dashboard=true", f"--dashboard-host={ip}",
                             f"--dashboard-port={opts.dashboard_port}", "--disable-usage-stats",
                             *opts.ray_start_args], env=env)
    try:
        wait_for_port(ip, opts.port, 120, "ray start --head", proc=node)
        os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"]
        wait_for_nodes(address, len(info.hosts), opts.join_timeout)
        command = job_command(opts)
        log(f"running {shlex.join(command)}")
        started = time.monotonic()
        job = subprocess.Popen(command, cwd=opts.code_dir, env=env)
        try:
            rc = job.wait()
        finally:
            stop_process(job, timeout=30)
        log(f"job exited with code {rc} after {time.monotonic() - started:.1f}s")
    finally:
        server.done.set()
        workers = set(info.hosts) - {info.current_host}
        deadline = time.monotonic() + opts.release_timeout
        while not workers <= server.released and time.monotonic() < deadline:
            time.sleep(0.5)
        if not workers <= server.released:
            log(f"workers {sorted(workers - server.released)} did not confirm the end; stopping anyway")
        time.sleep(2.0)  # let released workers stop their nodes before the GCS goes away
        server.shutdown()
        server.server_close()
        stop_process(node)
    return rc


def run_worker(info: HostInfo, opts: BootstrapOptions) -> int:
    head_ip = opts.head_ip or socket.gethostbyname(info.head)
    env = {**ray_env(), "RAY_ADDRESS": f"{head_ip}:{opts.port}"}
    log(f"worker {info.current_host}; waiting for head {info.head} ({head_ip}:{opts.port})")
    wait_for_port(head_ip, opts.port, opts.join_timeout, f"head {info.head}")
    args = [ray_executable(), "start", "--block", f"--address={head_ip}:{opts.port}", "--disable-usage-stats",
            *opts.ray_start_args]
    if opts.node_ip:
        args.append(f"--node-ip-address={opts.node_ip}")
    node = subprocess.Popen(args, env=env)
    last_contact = time.monotonic()
    try:
        while True:
            if node.poll() is not None:
                log(f"ray node exited unexpectedly with code {node.returncode}")
                return 1
            answer = poll_signal(head_ip, opts.signal_port, info.current_host)
            if answer == "done":
                log("head finished; leaving the cluster")
                return 0
            if answer is not None:
                last_contact = time.monotonic()
            elif time.monotonic() - last_contact > opts.head_lost_timeout:
                log(f"lost the head for {opts.head_lost_timeout:.0f}s; giving up")
                return 1
            time.sleep(1.0)
    finally:
        stop_process(node)


# ---- entrypoint ------------------------------------------------------------------------------------------


CONSTRAINTS_NAME = "constraints.txt"
"""Pinned versions (ray, torch, the CUDA kernels) in the source directory; cluster.yaml installs the same."""


def install_command(code_dir: Path, extras: str = "") -> list[str]:
    """The pip command that installs raycad (with pip `extras`) from ``code_dir``, pinned by its constraints."""
    target = f"{code_dir}[{extras}]" if extras else str(code_dir)
    constraints = code_dir / CONSTRAINTS_NAME
    pins = ["-c", str(constraints)] if constraints.is_file() else []
    return [sys.executable, "-m", "pip", "install", "--quiet", *pins, target]


def ensure_raycad(code_dir: Path, extras: str = "") -> None:
    """Install raycad (with pip `extras`, e.g. "cuda") from the source directory unless it is importable."""
    try:
        import raycad  # noqa: F401
    except ImportError:
        command = install_command(code_dir, extras)
        log(f"installing: {' '.join(command[1:])}")
        subprocess.check_call(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raycad.launch.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raycad_job", "--job", dest="job", default="finetune",
                        help=f"one of {', '.join(JOBS)}, or a path to a .py script")
    parser.add_argument("--raycad_args", "--job-args", dest="job_args", default="",
                        help="the job's arguments as one shell-quoted string")
    parser.add_argument("--raycad_extras", "--extras", dest="extras", default="",
                        help="pip extras to install raycad with when it is missing (e.g. cuda)")
    parser.add_argument("--code-dir", default=os.getcwd(),
                        help="directory holding jobs/ (default: the current directory, /opt/ml/code)")
    parser.add_argument("--resource-config", default=None, help=f"host file (default {RESOURCE_CONFIG})")
    parser.add_argument("--port", type=int, default=6379, help="Ray GCS port on the head")
    parser.add_argument("--signal-port", type=int, default=6390, help="the head's end-of-job signal port")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard port on the head")
    parser.add_argument("--head-ip", default=None, help="head address (default: resolve the head host name)")
    parser.add_argument("--node-ip", default=None, help="this node's address (default: resolve this host)")
    parser.add_argument("--ray-start-args", default="", help="extra `ray start` arguments (one string)")
    parser.add_argument("--join-timeout", type=float, default=900.0)
    return parser


def _join_values(argv: list[str]) -> list[str]:
    """``--raycad_args "--set a=1"`` -> ``--raycad_args=--set a=1`` (a value may itself start with '-')."""
    out, it = [], iter(argv)
    for item in it:
        if item in ("--raycad_args", "--job-args"):
            item = f"{item}={next(it, '')}"
        out.append(item)
    return out


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SageMaker (and tests) stop a host with SIGTERM: unwind so that Ray nodes and the job are stopped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # The SageMaker toolkit passes every hyper-parameter as --name value; keep only those we know.
    args, unknown = build_parser().parse_known_args(_join_values(sys.argv[1:] if argv is None else argv))
    if unknown:
        log(f"ignoring unknown arguments {unknown}")
    info = read_host_info(args.resource_config)
    opts = BootstrapOptions(job=args.job, job_args=shlex.split(args.job_args), code_dir=Path(args.code_dir),
                            port=args.port, signal_port=args.signal_port, dashboard_port=args.dashboard_port,
                            head_ip=args.head_ip,
                            node_ip=args.node_ip, ray_start_args=tuple(shlex.split(args.ray_start_args)),
                            join_timeout=args.join_timeout)
    ensure_raycad(opts.code_dir, args.extras)
    return run_head(info, opts) if info.is_head else run_worker(info, opts)


if __name__ == "__main__":
    # Run as a file (SageMaker's sagemaker_program), sys.path[0] is raycad/launch/: drop it so that its
    # modules never shadow top-level packages; raycad itself is imported from the installed package.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    sys.exit(main())
