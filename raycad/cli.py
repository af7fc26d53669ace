"""The ``raycad`` command line.

Each concern contributes its sub-commands through an ``add_commands(subparsers)`` function in its own
``cli`` module (listed in `COMMAND_MODULES`); heavy imports (Ray, torch) happen inside the command
functions so that ``raycad --help`` stays fast. Commands that run something build the typed config once
with `config_from_args` and pass that object on.

Errors are one line on stderr, the same for every verb (`main`): a config error or bad input data (also when
raised inside a Ray task, where Ray wraps it in its own exception and traceback) exits 2, Ctrl-C exits 130,
anything else 1. Every verb takes ``--verbose``: full tracebacks, and Ray's own output on the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable
from typing import Any

from raycad.config import Config, ConfigError

COMMAND_MODULES = (
    "raycad.data.cli",
    "raycad.train.cli",
    "raycad.pretrain.cli",
    "raycad.baseline.cli",
    "raycad.tune.cli",
    "raycad.data.healthomics.cli",
    "raycad.launch.cli",
    "raycad.interpret.cli",
)


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    """The optional ``TASK_OR_URI`` positional of the verbs that read a config's data (finetune, baseline, ...)."""
    parser.add_argument("data", nargs="?", metavar="TASK_OR_URI",
                        help="Genomic Benchmarks task name/alias, or training data URI; omitted = bundled demo")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` (dotted keys, YAML values)."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML or JSON config file")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override a config field, e.g. --set optim.lr=1e-3 (repeatable)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The flags every training verb (finetune, pretrain) takes; `run_fields` maps them onto the config."""
    parser.add_argument("--workers", type=int, help="number of Ray Train workers (scaling.num_workers)")
    parser.add_argument("--gpu", action="store_true", default=None, help="train on GPUs (scaling.use_gpu)")
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--output", "-o", metavar="DIR", help="run.output_dir")
    parser.add_argument("--name", help="run.name (re-using a name resumes that run from its last checkpoint)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a private local Ray)")
    resume = parser.add_mutually_exclusive_group()  # a changed config is refused unless one of these says what to do
    resume.add_argument("--continue-stored", dest="resume_policy", action="store_const", const="stored",
                        help="resume --name with the config it was started with, ignoring changes")
    resume.add_argument("--fresh", dest="resume_policy", action="store_const", const="fresh",
                        help="start --name over (the previous run directory is moved aside)")


def run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields of the `add_run_args` flags (None = not given)."""
    return {"scaling.num_workers": args.workers, "scaling.use_gpu": args.gpu, "train.epochs": args.epochs,
            "run.output_dir": args.output, "run.name": args.name}


def run_training_verb(verb: str, cfg: Any, args: argparse.Namespace, run: Callable[[Any], Any]) -> int:
    """Run ``run(cfg)`` for a training verb: Ray's own output to ``<run dir>/raycad.log`` (unless --verbose),
    Ray started or joined (``--address``), and a Ctrl-C that says how to resume the run."""
    from pathlib import Path

    from raycad.runtime import console, init_ray, note_interrupt_hint, quiet_output

    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    note_interrupt_hint(f"resume with --name {cfg.run.name}" + (f" --output {cfg.run.output_dir}"
                                                                 if args.output else ""))
    with quiet_output(run_dir / "raycad.log", verbose=args.verbose) as log_path:
        if log_path is not None:
            console.print(f"raycad {verb}: run {cfg.run.name} (Ray's own logs: {log_path}; --verbose shows them)")
        init_ray(args.address)
        run(cfg)
    return 0


def config_from_args(cls: type[Config], args: argparse.Namespace, **fields: Any) -> Config:
    """Config file, then the named flag values (dotted keys as ``a__b``; None = not given), then --set."""
    return cls.load(args.config, overrides=args.overrides, **fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raycad",
        description="Pre-train, fine-tune and tune the Caduceus DNA model on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    _add_verbose(sub)
    return parser


def _add_verbose(sub: argparse._SubParsersAction) -> None:
    """``--verbose`` on every command (the leaves of nested sub-commands such as ``launch sagemaker``)."""
    for command in sub.choices.values():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for action in nested:
                _add_verbose(action)
        elif not any("--verbose" in action.option_strings for action in command._actions):
            command.add_argument("--verbose", "-v", action="store_true",
                                 help="full tracebacks, and Ray's own logs on the terminal (default: in a log file)")


def _data_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input is bad" (exit 2, one line), wherever they were raised."""
    from raycad.data.records import RecordError

    types: list[type[BaseException]] = [RecordError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                        UnicodeDecodeError]
    for module, name in (("pyarrow.lib", "ArrowInvalid"), ("pandas.errors", "EmptyDataError"),
                         ("pandas.errors", "ParserError"), ("safetensors", "SafetensorError")):
        mod = sys.modules.get(module)  # only types whose library is loaded can have been raised
        if mod is not None and isinstance(getattr(mod, name, None), type):
            types.append(getattr(mod, name))
    return tuple(types)


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps: Ray's task/actor errors (``.cause``), train worker failures, ``__cause__``."""
    seen: list[BaseException] = []
    todo = [err]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo.append(getattr(current, "cause", None))
        todo.extend((getattr(current, "worker_failures", None) or {}).values())
        todo.extend([current.__cause__, current.__context__])
    return seen


def _is_ray_wrapper(err: BaseException) -> bool:
    return type(err).__module__.startswith("ray.") or "RayTaskError" in type(err).__name__


def data_error(err: BaseException) -> BaseException | None:
    """The bad-input error behind ``err`` (unwrapping Ray's wrappers), or None when it is not one."""
    types = _data_error_types()
    for cause in _causes(err):
        if isinstance(cause, types) and not _is_ray_wrapper(cause):
            return cause
    for cause in _causes(err):  # Ray's dual-class RayTaskError(SourceError): the original is its .cause
        if isinstance(cause, types):
            return getattr(cause, "cause", None) or cause
    return None


def error_line(err: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that ended a command."""
    from raycad.runtime import RayStartError, interrupt_hint, was_interrupted

    if isinstance(err, ConfigError):
        return 2, f"config error: {_one_line(str(err))}"
    if was_interrupted() or any(isinstance(c, KeyboardInterrupt) for c in _causes(err)):
        hint = interrupt_hint()
        return 130, "interrupted" + (f"; {hint}" if hint else "")
    if isinstance(err, RayStartError):
        return 1, str(err)
    bad = data_error(err)
    if bad is not None:
        # Ray Data appends its retry advice on new lines to the message of a failed task's error: keep ours.
        message = str(bad).split("\n", 1)[0]
        if isinstance(bad, OSError) and bad.filename and bad.strerror:
            message = f"{bad.filename}: {bad.strerror}"
        return 2, f"data error: {_one_line(message)}"
    return 1, f"{type(err).__name__}: {_one_line(str(err))} (--verbose for the traceback)"


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "(no message)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from raycad.runtime import interrupts_as_keyboard_interrupt

    try:
        with interrupts_as_keyboard_interrupt():
            return int(func(args) or 0)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - every failure becomes one line (and an exit status)
        status, line = error_line(err)
        if getattr(args, "verbose", False) or status == 1 and not isinstance(err, Exception):
            traceback.print_exception(err)
        print(f"raycad: {line}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
