"""HealthOmics streaming throughput against the loopback stand-in; writes the ``## HealthOmics`` section.

Starts moto_server (S3) and tests/omics_standin.py (the omics routes) on 127.0.0.1, imports the bundled
demo repeated ``--copies`` times (unique ids) with `import_to_sequence_store`, then streams every read set
back through Ray Data (`read_healthomics`: one read task per part) via GetReadSet parts and via the S3
access URI, and reports sequences per second (best of ``--repeats``).

    python bench/healthomics.py --copies 8 --part-mb 1 --repeats 3 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTION = "## HealthOmics"
sys.path.insert(0, str(REPO / "tests"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_moto() -> tuple[subprocess.Popen, str]:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def _write_source(folder: Path, copies: int) -> tuple[Path, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from raycad.data.loader import BUNDLED_DEMO

    demo = pq.read_table(BUNDLED_DEMO, columns=["id", "sequence", "label"])
    tables = [demo.set_column(0, "id", pc.binary_join_element_wise(demo["id"], pa.scalar(f"copy{i}"), "-"))
              for i in range(copies)]
    path = folder / "source.parquet"
    pq.write_table(pa.concat_tables(tables), path)
    return path, demo.num_rows * copies


def run(args: argparse.Namespace) -> str:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    import boto3
    from omics_standin import OmicsStandIn

    from raycad.data.healthomics import OmicsImportConfig, import_to_sequence_store, read_healthomics
    from raycad.runtime import console, init_ray

    init_ray(num_cpus=args.cpus)
    moto, s3_url = _start_moto()
    standin = None
    work = Path(tempfile.mkdtemp(prefix="raycad-bench-omics-"))
    try:
        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket="staging")
        standin = OmicsStandIn(s3_url, part_size=int(args.part_mb * (1 << 20))).start()
        source, n_expected = _write_source(work, args.copies)
        cfg = OmicsImportConfig(
            data={"train": str(source), "class_names": ["negative", "positive"]}, splits=["train"],
            dataset_name="bench", store="bench", role_arn="arn:aws:iam::123456789012:role/omics-import",
            staging_uri="s3://staging/bench", endpoint_url=standin.url, s3_endpoint_url=s3_url,
            waiter_delay=0.1, store_wait_delay=0.1, manifest=str(work / "manifest.json"))
        start = time.perf_counter()
        result = import_to_sequence_store(cfg)
        import_seconds = time.perf_counter() - start
        assert result.ok, [e.message for e in result.failed]
        parts = sum(-(-len(r.data) // standin.part_size) for r in standin.read_sets.values())
        gz_bytes = sum(len(r.data) for r in standin.read_sets.values())
        rows: dict[str, list[float]] = {}
        for path in ("api", "s3"):
            for _ in range(args.repeats):
                ds = read_healthomics(f"healthomics://{result.store_id}", endpoint_url=standin.url,
                                      s3_endpoint_url=s3_url, read_path=path, region="us-east-1")
                start = time.perf_counter()
                n = sum(len(batch["label"]) for batch in ds.iter_batches(batch_size=4096, batch_format="numpy"))
                seconds = time.perf_counter() - start
                assert n == n_expected, (n, n_expected)
                rows.setdefault(path, []).append(seconds)
                console.print(f"{path}: {n} sequences in {seconds:.2f} s ({n / seconds:,.0f}/s)")
    finally:
        if standin is not None:
            standin.stop()
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    machine = f"{platform.node() or 'host'} ({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})"
    command = f"python bench/healthomics.py --copies {args.copies} --part-mb {args.part_mb:g} --repeats {args.repeats}"
    lines = [
        SECTION, "",
        f"_Machine: {machine}; command: `{command}`; date: {datetime.now():%Y-%m-%d %H:%M}._", "",
        (f"Streaming read sets back from the loopback HealthOmics stand-in (tests/omics_standin.py; real boto3 "
        f"client over HTTP, moto_server as S3) into Ray Data ({args.cpus} CPUs): {n_expected:,} sequences x 251 bp "
        f"(the bundled demo x {args.copies}) in {len(result.entries)} read sets, {gz_bytes / (1 << 20):.1f} MiB "
        f"gzip FASTQ, {parts} parts of {args.part_mb:g} MiB, one read task per part; best of {args.repeats}. "
        f"The import itself (FASTQ writing, upload, job) took {import_seconds:.1f} s."), "",
        "| read path | sequences/s | seconds (best) |", "|---|---:|---:|",
    ]
    labels = {"api": "GetReadSet parts", "s3": "S3 access URI (byte ranges)"}
    for path, times in rows.items():
        best = min(times)
        lines.append(f"| {labels[path]} | {n_expected / best:,.0f} | {best:.2f} |")
    lines += ["", ("A loopback stand-in measures raycad's side (part fetching, gzip, FASTQ parsing, Arrow blocks), "
              "not the AWS service: real GetReadSet is capped at 30 TPS per account."), ""]
    return "\n".join(lines)


def write_section(markdown: str) -> None:
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: markdown + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + markdown + "\n"
    BENCHMARKS_MD.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8, help="times the 9,034-sequence demo is repeated")
    parser.add_argument("--part-mb", type=float, default=1.0, help="the stand-in's read set part size (MiB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION!r} section of BENCHMARKS.md")
    args = parser.parse_args()
    markdown = run(args)
    print(markdown)
    if args.write:
        write_section(markdown)


if __name__ == "__main__":
    main()
