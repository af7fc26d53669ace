"""Process-level helpers shared by every job: starting or joining Ray, and what reaches the terminal.

`init_ray` joins the cluster named by ``address`` or ``RAY_ADDRESS`` (what ``ray job submit`` sets), and
otherwise starts a private local instance (``address="local"``) so that a stale cluster on the machine is
never joined by accident. A local instance gets a GCS port of its own that its workers are told about
(``RAY_ADDRESS`` in their environment), so Ray-internal helpers such as Train's placement-group cleaner find
*this* instance even when other raycad runs are active on the machine. A startup that times out (a loaded
machine) is retried once, then reported as one `RayStartError`.

`quiet_output(log_path)` is the default console of every long-running verb: the terminal shows raycad's own
lines only (the `console`, the ``raycad`` logger, and train-worker lines written with `worker_progress`);
everything else -- Ray's logs, Ray Data execution plans, warnings, the output of every Ray process started
meanwhile -- goes to ``log_path``. ``verbose=True`` leaves the streams alone (everything on the terminal)::

    with quiet_output(run_dir / "raycad.log", verbose=args.verbose):
        init_ray()
        ...

`note_interrupt_hint` sets what a Ctrl-C prints (e.g. how to resume the run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)

WORKER_TAG = "[raycad] "
"""Prefix of the lines a Ray worker writes for the terminal (see `worker_progress`)."""

_LOG_CONFIGURED = False
_QUIET: dict[str, Any] = {"active": False, "log_path": None}
_INTERRUPT_HINT: list[str] = []


class RayStartError(RuntimeError):
    """Ray could not be started or joined; the message says what to try."""


def get_logger(name: str) -> logging.Logger:
    """A logger under ``raycad`` that prints through rich (configured once per process)."""
    global _LOG_CONFIGURED
    if not _LOG_CONFIGURED:
        root = logging.getLogger("raycad")
        if not root.handlers:
            handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
            root.addHandler(handler)
        root.setLevel(os.environ.get("RAYCAD_LOG_LEVEL", "INFO"))
        _LOG_CONFIGURED = True
    return logging.getLogger(name if name.startswith("raycad") else f"raycad.{name}")


# ---- the terminal ------------------------------------------------------------------------------------------------


def worker_progress(message: str) -> None:
    """One line for the terminal from inside a Ray worker (e.g. rank 0 of a Train run).

    Written to stdout directly (Ray Train patches ``print`` into its loggers, which echo each line twice) and
    tagged with `WORKER_TAG`: Ray forwards worker stdout to the driver, where `quiet_output` lets exactly
    these lines through.
    """
    sys.stdout.write(f"{WORKER_TAG}{message}\n")
    sys.stdout.flush()


def quiet_active() -> bool:
    return bool(_QUIET["active"])


@contextlib.contextmanager
def quiet_output(log_path: str | os.PathLike | None, verbose: bool = False,
                 worker_lines: bool = True) -> Iterator[Path | None]:
    """Send everything but raycad's own lines to ``log_path`` (see the module doc); yields the log path.

    Works at the file-descriptor level, so the C++ parts of Ray and every process Ray starts while the block
    is active write to the log too. `console` keeps the real terminal. ``worker_lines=False`` files the
    `worker_progress` lines too (a sweep prints one line per trial epoch of its own instead). No-op with
    ``verbose`` or no path.
    """
    if verbose or log_path is None or _QUIET["active"]:
        yield None
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # streams without descriptors (some test runners)
        yield None
        return
    saved_out, saved_err = os.dup(out_fd), os.dup(err_fd)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    log = path.open("a", buffering=1)
    previous_file = console._file  # rich's own attribute: None = follow sys.stderr
    os.dup2(log.fileno(), out_fd)
    os.dup2(log.fileno(), err_fd)
    console.file = terminal
    _QUIET.update(active=True, log_path=path, worker_lines=worker_lines)
    _swap_worker_log_handler(quiet=True)
    try:
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _swap_worker_log_handler(quiet=False)
        _QUIET.update(active=False, log_path=None)
        console.file = previous_file
        os.dup2(saved_out, out_fd)
        os.dup2(saved_err, err_fd)
        for fd in (saved_out, saved_err):
            os.close(fd)
        terminal.close()
        log.close()


def _print_worker_lines(data: dict[str, Any]) -> None:
    """Ray log-dispatcher handler: worker lines tagged `WORKER_TAG` go to the terminal."""
    for line in data.get("lines", ()):
        if WORKER_TAG in line:
            console.print(line.split(WORKER_TAG, 1)[1], markup=False, highlight=False)


def _swap_worker_log_handler(quiet: bool) -> None:
    """Add (or remove) `_print_worker_lines` on Ray's worker-log dispatcher.

    Ray's own handler keeps writing every worker line to ``sys.stdout``/``sys.stderr``, i.e. to the log file
    while `quiet_output` is active. Uses Ray's internal dispatcher; without it worker lines stay in the log.
    """
    try:  # private: Ray has no public hook on the worker lines it forwards to the driver
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # pragma: no cover - a Ray without the dispatcher
        return
    dispatcher.remove_handler("raycad_progress")
    if quiet and _QUIET.get("worker_lines", True):
        dispatcher.add_handler("raycad_progress", _print_worker_lines)


# ---- interrupts --------------------------------------------------------------------------------------------------


_INTERRUPTED: list[bool] = []


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Remember a Ctrl-C (SIGINT) in this block, then raise `KeyboardInterrupt` as Python does by default.

    Ray may turn the interrupt into its own exception on the way out of ``fit()``; `was_interrupted` lets the
    CLI still report it as an interrupt. Only in the main thread (signal handlers cannot be set elsewhere).
    """
    import signal
    import threading

    _INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def was_interrupted() -> bool:
    return bool(_INTERRUPTED)


def note_interrupt_hint(hint: str | None) -> None:
    """What `raycad.cli.main` prints after "interrupted" when Ctrl-C stops the command (None = nothing)."""
    _INTERRUPT_HINT[:] = [hint] if hint else []


def interrupt_hint() -> str | None:
    return _INTERRUPT_HINT[0] if _INTERRUPT_HINT else None


# ---- Ray ---------------------------------------------------------------------------------------------------------

STARTUP_ATTEMPTS = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_ray(address: str | None = None, **kwargs: Any) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialised (see the module doc)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs.setdefault("log_to_driver", True)
    if not address:  # a private local instance needs no dashboard (and starts faster without one)
        kwargs.setdefault("include_dashboard", False)
    # Silence Ray's per-run metrics/usage chatter; it cannot phone home here anyway.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                _start_local(ray, kwargs)
            break
        except Exception as err:  # Ray raises plain Exceptions for startup failures
            if "timed out" not in str(err).lower() and "timeout" not in str(err).lower():
                raise
            with contextlib.suppress(Exception):
                ray.shutdown()
            if attempt == STARTUP_ATTEMPTS:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise RayStartError(f"could not start {where}: Ray timed out during startup twice "
                                    f"(is the machine overloaded? retry when it is quieter)") from err
            get_logger("raycad.runtime").warning("Ray timed out during startup; retrying once")
    if quiet_active():
        _swap_worker_log_handler(quiet=True)


def _start_local(ray: Any, kwargs: dict[str, Any]) -> None:
    """``ray.init(address="local")`` on a GCS port chosen here, which every Ray process is told about.

    Ray-internal code that looks for "the" cluster (the State API of Train's placement-group cleaner) reads
    ``RAY_ADDRESS``; without it, a second Ray instance on the machine makes that lookup fail. The variables
    are set only while Ray starts (its processes inherit them) and then restored in this process, so a later
    `init_ray` in the same process starts a fresh instance instead of joining a dead one.

    Ray's raylet starts its workers at niceness 15 (``RAY_worker_niceness``) so that a cluster's own daemons stay
    responsive; in a private instance the workers (Train workers, predict actors) *are* the job, so they start
    at the driver's priority unless ``RAY_worker_niceness`` says otherwise.
    """
    from ray.util import get_node_ip_address

    port = _free_port()
    env = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{get_node_ip_address()}:{port}",
           # at nice 15 a masked-LM step in a worker ran at 0.84x of the same loop in the driver
           "RAY_worker_niceness": os.environ.get("RAY_worker_niceness", "0")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(address="local", **kwargs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
