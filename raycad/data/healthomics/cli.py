"""``raycad omics``: import sequences into a HealthOmics sequence store, and list what a store holds.

    raycad omics import --store my-store --role-arn arn:aws:iam::123456789012:role/omics-import \\
        --staging s3://my-bucket/raycad-staging [--source demo|<task>|<uri>] [--config omics.yaml] [--set k=v]
    raycad omics ls healthomics://1234567890?subjectId=human_nontata_promoters:train

``import`` exits 1 when any source failed (each is listed with HealthOmics' message), 2 on config errors.
"""

from __future__ import annotations

import argparse

from raycad.cli import add_config_args, config_from_args


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    omics = subparsers.add_parser("omics", help="AWS HealthOmics: import sequences, list read sets")
    sub = omics.add_subparsers(dest="omics_command", metavar="ACTION")

    imp = sub.add_parser("import", help="import the demo, a benchmark task or files into a sequence store")
    add_config_args(imp)
    imp.add_argument("--source", help="'demo' (default), a Genomic Benchmarks task name, or a data URI "
                                      "(imported as the train split; validation/test via --set data.test=...)")
    imp.add_argument("--store", help="sequence store id or name (a missing name is created)")
    imp.add_argument("--role-arn", help="IAM role HealthOmics assumes to read the staging prefix")
    imp.add_argument("--staging", help="s3://bucket/prefix for the FASTQ files")
    imp.add_argument("--region")
    imp.add_argument("--endpoint-url", help="omics endpoint override")
    imp.add_argument("--s3-endpoint-url", help="S3 endpoint override")
    imp.add_argument("--shard-mb", type=float, help="split FASTQ files after this many uncompressed MiB")
    imp.add_argument("--manifest", help="where to write the manifest JSON")
    imp.add_argument("--waiter-delay", type=float, help="seconds between import job polls")
    imp.add_argument("--waiter-max-attempts", type=int, help="polls before giving up")
    imp.set_defaults(func=run_import)

    ls = sub.add_parser("ls", help="list the ACTIVE read sets a healthomics:// URI selects, with their parts")
    ls.add_argument("uri", help="healthomics://<sequenceStoreId>?sampleId=..&subjectId=..&name=..")
    ls.add_argument("--region")
    ls.add_argument("--endpoint-url")
    ls.set_defaults(func=run_ls)
    omics.set_defaults(func=lambda args: omics.print_help() or 2)


def _source_fields(source: str | None) -> dict[str, str]:
    from raycad.data.tasks import resolve_task_or_uri

    return {} if source == "demo" else resolve_task_or_uri(source)


def run_import(args: argparse.Namespace) -> int:
    from raycad.data.healthomics.client import HealthOmicsError
    from raycad.data.healthomics.importer import OmicsImportConfig, import_to_sequence_store
    from raycad.runtime import console

    fields = {**_source_fields(args.source), "store": args.store, "role_arn": args.role_arn,
              "staging_uri": args.staging, "region": args.region, "endpoint_url": args.endpoint_url,
              "s3_endpoint_url": args.s3_endpoint_url, "manifest": args.manifest,
              "waiter_delay": args.waiter_delay, "waiter_max_attempts": args.waiter_max_attempts,
              "shard_bytes": int(args.shard_mb * (1 << 20)) if args.shard_mb else None}
    cfg = config_from_args(OmicsImportConfig, args, **fields)
    if cfg.data.train or cfg.data.task:
        from raycad.runtime import init_ray

        init_ray()
    try:
        result = import_to_sequence_store(cfg)
    except HealthOmicsError as err:
        console.print(f"[red]raycad omics import: {err}[/red]", soft_wrap=True)
        return 1
    console.print(f"sequence store {result.store_id}: {len(result.imported)} read set(s) imported, "
                  f"{len(result.existing)} already present, {len(result.failed)} failed; "
                  f"manifest {result.manifest_path}", soft_wrap=True)
    for entry in result.failed:
        console.print(f"[red]FAILED {entry.name}: {entry.message}[/red]", soft_wrap=True)
    return 0 if result.ok else 1


def run_ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from raycad.data.healthomics.client import HealthOmicsError, OmicsConnection
    from raycad.data.healthomics.datasource import HealthOmicsDatasource, parse_healthomics_uri
    from raycad.runtime import console

    source = HealthOmicsDatasource(parse_healthomics_uri(args.uri), label_policy="none",
                                   connection=OmicsConnection(region=args.region, endpoint_url=args.endpoint_url))
    try:
        parts = source.plan()
    except HealthOmicsError as err:
        console.print(f"[red]raycad omics ls: {err}[/red]", soft_wrap=True)
        return 1
    table = Table("read set", "name", "file", "parts", "bytes")
    seen: set[tuple[str, str]] = set()
    for part in parts:
        if (part.read_set_id, part.file) not in seen:
            seen.add((part.read_set_id, part.file))
            table.add_row(part.read_set_id, part.name, part.file, str(part.num_parts), str(part.content_length))
    console.print(table)
    return 0
