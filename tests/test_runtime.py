"""The process-level runtime: quiet output (terminal vs log file), worker lines, CLI error lines, interrupts."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raycad import runtime
from raycad.cli import error_line
from raycad.config import ConfigError
from raycad.data.records import RecordError

REPO = Path(__file__).resolve().parents[1]


def test_quiet_output_keeps_raycad_lines_and_files_the_rest(tmp_path):
    """In a child process (real descriptors): fd-level output and worker chatter go to the log; raycad's lines
    and worker lines tagged [raycad] reach the terminal; --verbose leaves everything on the terminal."""
    script = textwrap.dedent("""
        import os, sys
        from raycad import runtime
        with runtime.quiet_output(sys.argv[1], verbose=sys.argv[2] == "1"):
            print("ray chatter on stdout")
            print("ray warning on stderr", file=sys.stderr)
            os.write(2, b"C++ log line\\n")
            runtime.console.print("raycad line")
            runtime._print_worker_lines({"lines": ["(RayTrainWorker pid=1) [raycad] epoch 1/2  50%",
                                                   "(PlacementGroupCleaner pid=2) State API unavailable"]})
        print("after the block")
    """)
    log = tmp_path / "run" / "raycad.log"
    for verbose in ("0", "1"):
        done = subprocess.run([sys.executable, "-c", script, str(log), verbose], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=True)
        terminal = done.stdout + done.stderr
        assert "raycad line" in terminal and "epoch 1/2  50%" in terminal and "after the block" in terminal
        if verbose == "0":
            assert "chatter" not in terminal and "ray warning" not in terminal and "C++" not in terminal
            assert "State API" not in terminal
            text = log.read_text()
            assert "ray chatter on stdout" in text and "ray warning on stderr" in text and "C++ log line" in text
        else:
            assert "ray chatter" in terminal and "C++ log line" in terminal


def test_error_lines_unwrap_ray_and_name_the_problem():
    import ray.exceptions

    bad = RecordError("data/train.csv: record 'r7': empty sequence\nFailed to apply UDF transform after 1/1 "
                      "attempts (total backoff 0.0s).\nTo change retry attempts, ...", "empty_sequence")
    wrapped = ray.exceptions.RayTaskError("ReadFiles", "Traceback ...\n" * 50, bad)
    status, line = error_line(wrapped.as_instanceof_cause())
    assert (status, line) == (2, "data error: data/train.csv: record 'r7': empty sequence")
    try:
        raise RuntimeError("Ray Data failed") from wrapped
    except RuntimeError as err:
        assert error_line(err) == (2, "data error: data/train.csv: record 'r7': empty sequence")
    assert error_line(FileNotFoundError(2, "No such file or directory", "x.csv")) == \
        (2, "data error: x.csv: No such file or directory")
    assert error_line(ConfigError("optim.lr: bad"))[0] == 2
    status, line = error_line(ValueError("boom"))
    assert status == 1 and "\n" not in line and "--verbose" in line
    assert error_line(runtime.RayStartError("could not start"))[0] == 1


def test_interrupt_line_carries_the_resume_hint():
    runtime.note_interrupt_hint("resume with --name demo-1")
    try:
        assert error_line(KeyboardInterrupt()) == (130, "interrupted; resume with --name demo-1")
    finally:
        runtime.note_interrupt_hint(None)


def test_record_errors_keep_their_reason_across_pickling():
    from raycad.data.fastx import FastxError
    from raycad.data.sources import SourceError

    for err in (SourceError("f.csv: record 3: empty sequence", "empty_sequence"),
                FastxError("bad header", "empty id", "f.fa", 3, None, 7)):
        assert isinstance(err, RecordError)
        back = pickle.loads(pickle.dumps(err))
        assert back.reason == err.reason and str(back) == str(err)


def test_ray_startup_timeout_is_retried_once_then_one_line(monkeypatch):
    import ray

    calls = []

    def fake_init(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("The current node timed out during startup.")

    monkeypatch.delenv("RAY_GCS_SERVER_PORT", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(runtime.RayStartError, match="timed out during startup twice"):
        runtime.init_ray()
    assert len(calls) == runtime.STARTUP_ATTEMPTS == 2
    assert calls[0]["address"] == "local"
    # the pinned GCS port is for Ray's processes only: this process forgets it (a later init starts afresh)
    assert "RAY_GCS_SERVER_PORT" not in os.environ and "RAY_ADDRESS" not in os.environ


@pytest.mark.parametrize("converted", [False, True])
def test_ctrl_c_exits_130_with_the_resume_hint(converted):
    """SIGINT during a command: "interrupted; resume with --name X", exit 130, also when the interrupt reaches
    the CLI as another exception (Ray turns it into its own errors on the way out of fit())."""
    import signal
    import time

    script = textwrap.dedent(f"""
        import sys, time
        import raycad.train.cli as train_cli
        from raycad import runtime

        def fake_finetune(args):
            runtime.note_interrupt_hint("resume with --name demo-7")
            print("ready", flush=True)
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                if {converted}:
                    raise RuntimeError("ray: the train controller died") from None
                raise
            return 0

        train_cli._finetune = fake_finetune
        from raycad.cli import main
        sys.exit(main(["finetune"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "raycad: interrupted; resume with --name demo-7"


def test_private_ray_workers_run_at_the_drivers_priority(ray_local):
    """Ray starts workers at niceness 15 by default; a private instance's workers (the job itself) must not
    lose the CPU to every other process on the machine."""

    @ray_local.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray_local.get(niceness.remote()) == os.nice(0)
