"""``raycad tune``: a hyper-parameter sweep per task, or ``--resume DIR`` to continue an interrupted one.

    raycad tune --tasks all|demo|name,... --num-samples N [--trial-workers W --gpu]
                [--config SWEEP.yaml --set key=value] --output DIR [--name NAME]
    raycad tune --resume DIR

``--config`` takes a sweep file (`raycad.tune.SweepConfig`: ``base`` = a fine-tuning config, ``space``,
``tasks``, ``asha``, ...); ``--set`` overrides any field, e.g. ``--set base.train.epochs=5`` or
``--set space.lora_r=[8,16]``. A task may also be ``name=URI`` for a user's training data, e.g.
``--tasks mine=s3://bucket/train.csv``. Outputs go to ``<output>/<name>``: summary.csv, summary.md,
summary.png and ``best_configs/<task>.yaml`` (each usable as ``raycad finetune --config``).
"""

from __future__ import annotations

import argparse

from raycad.cli import add_config_args, config_from_args


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tune", help="tune LoRA / learning rate / head per task with Ray Tune + Optuna",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", help='comma-separated tasks: "all", "demo", benchmark names/aliases, NAME=URI')
    p.add_argument("--num-samples", type=int, help="trials per task")
    p.add_argument("--trial-workers", type=int, help="Ray Train workers per trial")
    p.add_argument("--gpu", action="store_true", default=None, help="train trials on GPUs")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster holds)")
    p.add_argument("--epochs", type=int, help="epochs per trial (base.train.epochs; ASHA's max_t)")
    p.add_argument("--seed", type=int, help="seed of the TPE sampler")
    p.add_argument("--output", "-o", metavar="DIR", help="output directory (default raycad_sweeps)")
    p.add_argument("--name", help="sweep name (default sweep-<timestamp>)")
    p.add_argument("--storage", metavar="PATH_OR_S3", help="Ray storage for experiments and checkpoints")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a private local Ray)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted sweep in DIR")
    add_config_args(p)
    p.set_defaults(func=_tune)


def parse_tasks(text: str) -> list[str | dict[str, object]]:
    """``"demo,nontata,mine=path/train.csv"`` -> ["demo", "nontata", {"name": "mine", "data": {"train": ...}}]."""
    tasks: list[str | dict[str, object]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, uri = item.partition("=")
        tasks.append({"name": name.strip(), "data": {"train": uri.strip()}} if sep else item)
    return tasks


def _tune(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from raycad.config import ConfigError
    from raycad.runtime import console, note_interrupt_hint, quiet_output
    from raycad.tune.sweep import SweepConfig, resume_sweep, run_sweep, sweep_dir_of

    if args.resume:
        given = [flag for flag, value in (("--tasks", args.tasks), ("--num-samples", args.num_samples),
                                          ("--config", args.config), ("--set", args.overrides)) if value]
        if given:
            raise ConfigError(f"--resume continues the saved sweep as it was; drop {', '.join(given)}")
        note_interrupt_hint(f"resume with --resume {args.resume}")
        with quiet_output(Path(args.resume) / "raycad.log", verbose=args.verbose, worker_lines=False) as log:
            if log is not None:
                console.print(f"raycad tune: resuming {args.resume} (Ray's own logs: {log}; --verbose shows them)")
            resume_sweep(args.resume)
        return 0
    fields = {"tasks": parse_tasks(args.tasks) if args.tasks else None, "num_samples": args.num_samples,
              "trial_workers": args.trial_workers, "gpu": args.gpu, "max_concurrent": args.max_concurrent,
              "base.train.epochs": args.epochs, "seed": args.seed, "output_dir": args.output, "name": args.name,
              "storage_path": args.storage, "address": args.address}
    cfg = config_from_args(SweepConfig, args, **fields)
    if cfg.name is None:
        cfg = cfg.with_overrides({"name": f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}"})
    out = sweep_dir_of(cfg)
    note_interrupt_hint(f"resume with --resume {out}")
    with quiet_output(out / "raycad.log", verbose=args.verbose, worker_lines=False) as log:
        if log is not None:
            console.print(f"raycad tune: sweep {cfg.name} (Ray's own logs: {log}; --verbose shows them)")
        run_sweep(cfg)
    return 0
