"""``raycad embed``, ``raycad explain`` and ``raycad score-variants`` (see `raycad.interpret`).

- ``raycad embed MODEL_DIR INPUT -o OUT.parquet [--pooling mean] [--layers all|0,2]``
- ``raycad explain MODEL_DIR INPUT -o DIR [--target CLASS] [--max-records 50]``
- ``raycad score-variants MODEL_DIR --vcf V.vcf.gz --reference REF.fa -o OUT.parquet``

Each runs the model on Ray Data actors (one per CPU, or one per GPU with ``--gpu``; ``--actors N`` to choose)
on a private local Ray or the cluster at ``--address`` / RAY_ADDRESS.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("embed", help="pooled, RC-averaged backbone embeddings per record -> Parquet",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_and_input(p)
    p.add_argument("--output", "-o", required=True, metavar="OUT.parquet")
    p.add_argument("--pooling", default="mean", choices=("mean", "max", "first", "last"),
                   help="pooling over real tokens (default: mean)")
    p.add_argument("--layers", default="", metavar="all|I,J,...",
                   help="also write layer_<i> columns: hidden state i (0 = embedding output, n_layer = final)")
    p.add_argument("--batch-size", type=int, default=64, help="records per model call")
    _compute(p)
    p.set_defaults(func=_embed)

    p = subparsers.add_parser("explain", help="in-silico saturation mutagenesis and gradient x input per record",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_and_input(p)
    p.add_argument("--output", "-o", required=True, metavar="DIR")
    p.add_argument("--target", help="class name or index to explain (default: the last class)")
    p.add_argument("--max-records", type=int, default=None,
                   help="explain at most this many records (default: 50; each costs 3 x length forward passes)")
    p.add_argument("--batch-size", type=int, default=256, help="mutants per model call")
    p.add_argument("--no-plots", action="store_true", help="write the .npz matrices only, no PNG heatmaps")
    _compute(p)
    p.set_defaults(func=_explain)

    p = subparsers.add_parser("score-variants", help="ref vs alt class probabilities of VCF variants",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory")
    p.add_argument("--vcf", required=True, metavar="V.vcf.gz", help="VCF/BCF; an indexed one is read in parallel")
    p.add_argument("--reference", required=True, metavar="REF.fa", help="reference FASTA (indexed, or indexable)")
    p.add_argument("--output", "-o", required=True, metavar="OUT.parquet", help="output .parquet, .csv or .tsv")
    p.add_argument("--batch-size", type=int, default=64, help="windows per model call")
    _compute(p)
    p.set_defaults(func=_score_variants)


def _model_and_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory")
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="file, directory, glob, s3:// or healthomics:// URI (FASTA/FASTQ/BAM/CSV/TSV/Parquet)")
    p.add_argument("--format", help="input format when the extension does not say (csv, fasta, bam, ...)")
    p.add_argument("--sequence-column", help="table column holding the sequences")
    p.add_argument("--id-column", help="table column holding record ids")


def _compute(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", action="store_true", help="one GPU actor per GPU of the Ray cluster")
    p.add_argument("--actors", type=int, help="model actors (default: one per GPU, or one per CPU)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a private local Ray)")


def _start(args: argparse.Namespace) -> None:
    from ray.data import DataContext

    from raycad.runtime import init_ray

    init_ray(args.address)
    DataContext.get_current().enable_progress_bars = False


def _input(args: argparse.Namespace) -> Any:
    return args.input if len(args.input) > 1 else args.input[0]


def _embed(args: argparse.Namespace) -> int:
    from raycad.interpret.pipelines import embed, model_shape
    from raycad.runtime import console

    if args.layers == "all":
        layers = list(range(model_shape(args.model_dir)["n_layer"] + 1))
    else:
        try:
            layers = [int(part) for part in args.layers.split(",") if part.strip()]
        except ValueError:
            raise SystemExit(f"raycad embed: --layers takes 'all' or integers like 0,2, not {args.layers!r}") from None
    _start(args)
    result = embed(args.model_dir, _input(args), args.output, pooling=args.pooling, layers=layers,
                   batch_size=args.batch_size, use_gpu=args.gpu, actors=args.actors, format=args.format,
                   sequence_column=args.sequence_column, id_column=args.id_column)
    console.print(f"{result['records']} embeddings (d_model {result['d_model']}; columns "
                  f"{', '.join(result['columns'])}) -> {args.output} in {result['seconds']:.1f} s "
                  f"({result['records_per_s']:.1f} records/s)")
    if result["truncated"]:
        console.print(f"{result['truncated']} record(s) were longer than the model's max_length and were cut "
                      f"(the 'truncated' column marks them)")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from raycad.interpret.pipelines import DEFAULT_MAX_RECORDS, explain
    from raycad.runtime import console

    cap = args.max_records or DEFAULT_MAX_RECORDS
    _start(args)
    report = explain(args.model_dir, _input(args), args.output, target=args.target, max_records=cap,
                     batch_size=args.batch_size, plots=not args.no_plots, use_gpu=args.gpu, actors=args.actors,
                     format=args.format, sequence_column=args.sequence_column, id_column=args.id_column)
    kinds = ".npz" if args.no_plots else ".npz + .png"
    console.print(f"explained {report.records} record(s) for class {report.target!r} -> {args.output}/ "
                  f"({kinds} per record, summary.parquet) in {report.seconds:.1f} s")
    if report.capped:
        console.print(f"[yellow]the input has more than {cap} records: only the first {cap} were explained "
                      f"(--max-records N to explain more; each record costs 3 x length forward passes)[/]")
    return 0


def _score_variants(args: argparse.Namespace) -> int:
    from rich.table import Table

    from raycad.interpret.pipelines import score_variants
    from raycad.runtime import console

    _start(args)
    report = score_variants(args.model_dir, args.vcf, args.reference, args.output, batch_size=args.batch_size,
                            use_gpu=args.gpu, actors=args.actors)
    console.print(f"{report.scored} allele(s) scored -> {args.output} in {report.seconds:.1f} s "
                  f"({report.variants_per_s:.1f} variants/s); {report.edge_padded} window(s) N-filled past a "
                  f"contig end")
    if report.skipped:
        table = Table(title=f"alleles not scored (each listed in {report.skipped_file})")
        table.add_column("reason")
        table.add_column("alleles", justify="right")
        for reason, count in report.skipped.items():
            table.add_row(reason, str(count))
        console.print(table)
        if report.skipped.get("off_contig") and not report.scored:
            console.print("[yellow]no allele is on a contig of the FASTA: do the contig names differ "
                          "(e.g. 'chr1' vs '1')?[/]")
    return 0
