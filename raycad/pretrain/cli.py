"""``raycad pretrain [URI ...]``: masked-LM (continued) pre-training of Caduceus on unlabelled sequences.

URIs are FASTA/FASTQ/BAM/CSV/Parquet files, directories or globs, local, ``s3://`` or ``healthomics://``;
none = the bundled demo's training split (sequences only). ``--validation`` names held-out files,
``--holdout`` held-out records (contigs); otherwise a seeded ``data.val_fraction`` of the windows is held out.
``--max-steps`` / ``--max-tokens`` set a budget instead of ``--epochs``. ``--config``, ``--set key=value``
(e.g. ``--set data.max_length=1024 --set data.stride=512``); re-using a ``--name`` resumes that run
(a changed config is refused unless ``--continue-stored`` or ``--fresh`` says what to do).
"""

from __future__ import annotations

import argparse

from raycad.cli import add_config_args, add_run_args, config_from_args, run_fields, run_training_verb


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="masked-LM pre-training on unlabelled sequences (Ray Train)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uris", nargs="*", metavar="URI", help="training sequences; none = the bundled demo's train split")
    add_config_args(p)
    p.add_argument("--validation", action="append", metavar="URI", help="held-out file(s) (data.validation)")
    p.add_argument("--holdout", action="append", metavar="RECORD_ID", help="held-out record/contig (data.holdout)")
    p.add_argument("--max-length", type=int, help="window length in tokens (data.max_length)")
    p.add_argument("--stride", type=int, help="distance between window starts (data.stride)")
    p.add_argument("--preset", help="model preset for a random init (model.preset)")
    p.add_argument("--from", dest="pretrained", metavar="DIR",
                   help="continue from a checkpoint directory or hub id (model.pretrained)")
    p.add_argument("--max-steps", type=int, help="optimizer-step budget instead of epochs (train.max_steps)")
    p.add_argument("--max-tokens", type=int, help="token budget instead of epochs (train.max_tokens)")
    add_run_args(p)
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from raycad.config import PretrainConfig
    from raycad.pretrain.recipe import default_run_name
    from raycad.train.trainer import resolve_resume

    fields = {"data.train": args.uris or None, "data.validation": args.validation, "data.holdout": args.holdout,
              "data.max_length": args.max_length, "data.stride": args.stride, "model.preset": args.preset,
              "model.pretrained": args.pretrained, "train.max_steps": args.max_steps,
              "train.max_tokens": args.max_tokens, **run_fields(args)}
    cfg = config_from_args(PretrainConfig, args, **fields)
    cfg = cfg.with_overrides({"run.name": cfg.run.name or default_run_name(cfg)})
    cfg = resolve_resume(cfg, args.resume_policy or "refuse")  # a changed config: refused before Ray starts

    def run(cfg: PretrainConfig) -> None:
        from raycad.pretrain.recipe import pretrain

        pretrain(cfg)

    return run_training_verb("pretrain", cfg, args, run)
