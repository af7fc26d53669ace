"""``raycad finetune``, ``raycad evaluate`` and ``raycad predict``.

- ``raycad finetune [TASK_OR_URI]``: with no argument, fine-tunes on the bundled demo data (2 CPU workers);
  a Genomic Benchmarks task name/alias sets ``data.task``, anything else is a training-data URI
  (``data.train``). ``--config``, ``--set key=value``, ``--workers``, ``--gpu``, ``--output``, ``--epochs``.
- ``raycad evaluate MODEL_DIR [DATA]``: metrics of an exported model (or a training checkpoint directory)
  on labeled data: a task, a URI, or (omitted) the bundled demo's test split.
- ``raycad predict MODEL_DIR INPUT... -o OUT``: class probabilities for every record of any input
  `raycad.data.read_sequences` takes, in input order with a row number, on Ray Data actors (`raycad.infer`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raycad.cli import (
    add_config_args,
    add_data_arg,
    add_run_args,
    config_from_args,
    run_fields,
    run_training_verb,
)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune Caduceus on Ray Train (default: the bundled demo)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    add_config_args(p)
    add_run_args(p)
    p.add_argument("--cv", type=int, metavar="K", help="K-fold cross-validation of the training split "
                   "(train.cv_folds; the paper's protocol: mean and max - min over folds)")
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser("evaluate", help="metrics of a fine-tuned model on labeled data")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory or training checkpoint")
    p.add_argument("data", nargs="?", metavar="DATA", help="task name/alias or data URI; omitted = bundled demo")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"),
                   help="split to score for the demo or a task (a URI is scored whole)")
    add_config_args(p)
    p.add_argument("--json", metavar="FILE", help="also write the metrics to this JSON file")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("predict", help="class probabilities for every record of any sequence input",
                              description=PREDICT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory (or training checkpoint)")
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="file, directory, glob, s3:// or healthomics:// URI (FASTA/FASTQ/BAM/CSV/TSV/Parquet)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output .parquet, .csv or .tsv")
    p.add_argument("--batch-size", type=int, default=128, help="records per model call")
    p.add_argument("--gpu", action="store_true", help="one GPU actor per GPU of the Ray cluster")
    p.add_argument("--actors", type=int, help="model actors (default: one per GPU, or one per CPU)")
    p.add_argument("--format", help="input format when the extension does not say (csv, fasta, bam, ...)")
    p.add_argument("--sequence-column", default=None, help="table column holding the sequences")
    p.add_argument("--id-column", default=None, help="table column holding record ids")
    p.add_argument("--s3-endpoint", help="endpoint of an S3-compatible store (MinIO, moto)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a private local Ray)")
    p.set_defaults(func=_predict)


PREDICT_DOC = """Class probabilities for every record of INPUT, written to OUT (Parquet, or CSV/TSV by extension).

Columns: row (0-based position in the input; files in path order), id, predicted_label, prob_<class> per
class, truncated (the record was longer than the model's max_length and was cut). Rows are in input order.
Records are tokenized, padded and batched as the model's raycad.json says; the model runs on Ray Data
actors (one per CPU, or one per GPU with --gpu), streaming, so inputs larger than memory work.
"""


def _finetune(args: argparse.Namespace) -> int:
    from raycad.config import FinetuneConfig
    from raycad.data.plan import plan_data
    from raycad.data.tasks import resolve_task_or_uri
    from raycad.train.trainer import default_run_name, resolve_resume

    fields = {**resolve_task_or_uri(args.data), **run_fields(args), "train.cv_folds": args.cv}
    cfg = config_from_args(FinetuneConfig, args, **fields)
    cfg = cfg.with_overrides({"run.name": cfg.run.name or default_run_name(cfg)})
    cfg = resolve_resume(cfg, args.resume_policy or "refuse")  # a changed config: refused before Ray starts
    plan = plan_data(cfg)  # missing files, empty tables, unusable labels: fail now, not after Ray started

    def run(cfg: FinetuneConfig) -> None:
        from raycad.train.recipe import finetune

        finetune(cfg, plan=plan)

    return run_training_verb("finetune", cfg, args, run)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from raycad.runtime import console
    from raycad.train.recipe import MissingSplit, evaluate
    from raycad.train.report import metrics_table

    try:
        result = evaluate(args.model_dir, args.data, split=args.split, config=args.config,
                          overrides=args.overrides)
    except MissingSplit as err:
        raise SystemExit(f"raycad evaluate: {err}") from None
    console.print(metrics_table(result.metrics, title=f"{args.model_dir} on {args.data or 'bundled demo'} "
                                f"[{result.split}]", class_names=result.class_names))
    console.print(f"{result.metrics.get(f'{_prefix(result.split)}n', 0)} records in {result.seconds:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result.metrics, indent=2) + "\n")
    return 0


def _prefix(split: str) -> str:
    from raycad.train.trainer import SPLIT_PREFIX

    return SPLIT_PREFIX.get(split, f"{split}_")


def _predict(args: argparse.Namespace) -> int:
    from raycad.infer import predict
    from raycad.runtime import console

    summary = predict(args.model_dir, args.input if len(args.input) > 1 else args.input[0], args.output,
                      batch_size=args.batch_size, use_gpu=args.gpu, actors=args.actors, format=args.format,
                      sequence_column=args.sequence_column, id_column=args.id_column,
                      s3_endpoint=args.s3_endpoint, progress=True, address=args.address)
    console.print(summary.describe())
    return 0
