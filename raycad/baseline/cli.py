"""``raycad baseline [TASK_OR_URI]``: the k-mer logistic-regression baseline on the data ``raycad finetune``
would train on (same splits, same records, same metrics), in seconds of CPU.

    raycad baseline                                  # the bundled demo
    raycad baseline human_enhancers_cohn --set baseline.canonical=true --json cohn-baseline.json
"""

from __future__ import annotations

import argparse

from raycad.cli import add_config_args, add_data_arg, config_from_args


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("baseline", help="k-mer logistic regression on the data finetune would use",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    add_config_args(p)
    p.add_argument("--json", metavar="FILE", help="also write the result to this JSON file")
    p.set_defaults(func=_baseline)


def _baseline(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rich.table import Table

    from raycad.baseline import describe, run_baseline
    from raycad.config import FinetuneConfig
    from raycad.data.tasks import resolve_task_or_uri
    from raycad.runtime import console
    from raycad.train.report import HEADLINE, fmt

    cfg = config_from_args(FinetuneConfig, args, **resolve_task_or_uri(args.data))
    result, report = run_baseline(cfg)
    splits = [s for s, p in (("validation", "val_"), ("test", "test_")) if f"{p}accuracy" in result]
    table = Table(title="raycad baseline")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for key in HEADLINE:
        table.add_row(key, *(fmt(result.get(f"{'val_' if s == 'validation' else 'test_'}{key}")) for s in splits))
    console.print(table)
    console.print(f"{describe(result)} on {report['source']}: k and C chosen on validation from k={cfg.baseline.k}, C={cfg.baseline.C}; "
                  f"{result['records']['train']:,} training records; {result['fit_time_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": result, "data": report}, indent=2, default=str) + "\n")
    return 0
