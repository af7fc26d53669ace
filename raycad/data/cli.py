"""``raycad benchmarks`` and ``raycad data-report``.

- ``raycad benchmarks``: the Genomic Benchmarks tasks raycad knows (names, aliases, classes, sizes, the
  paper's ``max_length``, published accuracies) as a table.
- ``raycad data-report [TASK_OR_URI]``: resolve and tokenize the data a fine-tuning config would use, then
  print records per split, skipped records by reason and truncations (``--json`` for a machine-readable copy).
"""

from __future__ import annotations

import argparse
import json

from raycad.cli import add_config_args, add_data_arg, config_from_args


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("benchmarks", help="list the Genomic Benchmarks tasks (raycad.data.TASKS)")
    p.set_defaults(func=_benchmarks)

    p = subparsers.add_parser("data-report", help="prepare a config's datasets and count records per split",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_data_report)


def benchmarks_table():
    """The task registry as a rich table."""
    from rich.table import Table

    from raycad.data.tasks import TASKS

    table = Table(title="Genomic Benchmarks tasks (accuracy: published top-1 on the test split)")
    for column, justify in (("task", "left"), ("aliases", "left"), ("classes", "left"), ("train", "right"),
                            ("test", "right"), ("seq length", "right"), ("max_length", "right"),
                            ("Caduceus-PS", "right"), ("Caduceus-Ph", "right"), ("GB CNN", "right")):
        table.add_column(column, justify=justify, no_wrap=column == "task")
    for task in TASKS.values():
        acc = task.published_accuracy
        table.add_row(task.name, ", ".join(task.aliases), ", ".join(task.class_names), f"{task.train_size:,}",
                      f"{task.test_size:,}", task.seq_length,
                      str(task.max_length) + ("" if task.max_length_source == "paper" else "*"),
                      *(f"{acc[k]:.3f}" if k in acc else "-" for k in ("Caduceus-PS", "Caduceus-Ph", "GB CNN")))
    table.caption = ("Hugging Face ids: katarinagresova/Genomic_Benchmarks_<task>. max_length: the Caduceus "
                     "paper's; * = not in the paper (longest sequence). Caduceus: Schiff et al. 2024, Table 1; "
                     "GB CNN: Grešová et al. 2023.")
    return table


def _console():
    """A rich console; wide when the output is not a terminal, so that piped tables are not squeezed."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 180)


def _benchmarks(args: argparse.Namespace) -> int:
    _console().print(benchmarks_table())
    return 0


def _data_report(args: argparse.Namespace) -> int:
    from rich.table import Table

    from raycad.config import FinetuneConfig
    from raycad.data.loader import prepare_datasets
    from raycad.data.plan import plan_data
    from raycad.data.tasks import resolve_task_or_uri
    from raycad.runtime import init_ray

    cfg = config_from_args(FinetuneConfig, args, **resolve_task_or_uri(args.data))
    plan = plan_data(cfg)  # before Ray starts
    init_ray()
    report = prepare_datasets(cfg, plan).report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title=f"data: {report['source']}  (max_length {report['max_length']}, "
                        f"classes {', '.join(report['class_names'])})")
    for column in ("split", "records", "skipped", "truncated", "invalid characters"):
        table.add_column(column, justify="left" if column in ("split", "skipped") else "right")
    for name, entry in report["splits"].items():
        skipped = ", ".join(f"{n} {reason}" for reason, n in entry["skipped"].items()) or "0"
        table.add_row(name, f"{entry['records']:,}", skipped, f"{entry['truncated']:,}",
                      f"{entry['invalid_characters']:,}")
    if report["note"]:
        table.caption = report["note"]
    _console().print(table)
    return 0
