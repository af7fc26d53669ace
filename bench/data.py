"""Data-layer benchmarks; results go to the ``## Data`` section of BENCHMARKS.md.

Each benchmark is a function returning a dict of results and a Markdown fragment, registered in
`BENCHMARKS`; ``python bench/data.py --only NAME`` runs a subset, and ``--write`` replaces the ``## Data``
section of BENCHMARKS.md with the fragments of the benchmarks that ran.

* ``s3``: end-to-end Ray Data throughput (sequences/s) of `raycad.data.sources.read_sequences` plus
  vectorized tokenization in ``map_batches``, from local parquet files vs the same files on a local S3
  endpoint (``moto_server`` on 127.0.0.1). Target: S3 >= 50% of local.

    python bench/data.py --only s3 --s3-sequences 200000 --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTION = "## Data"


# ---- S3 vs local end-to-end ------------------------------------------------------------------------------------


def _write_parquet_shards(folder: Path, n_sequences: int, length: int, n_files: int, seed: int = 0) -> int:
    """Random ACGT sequences with binary labels in ``n_files`` parquet files; returns the bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-n_sequences // n_files)
    for k in range(n_files):
        n = min(per_file, n_sequences - k * per_file)
        codes = rng.integers(0, 4, size=(n, length), dtype=np.uint8)
        raw = np.frombuffer(b"ACGT", dtype=np.uint8)[codes]
        seqs = pa.array([row.tobytes().decode() for row in raw], pa.string())
        table = pa.table({"id": [f"s{k}_{i}" for i in range(n)], "sequence": seqs,
                          "label": rng.integers(0, 2, size=n)})
        pq.write_table(table, folder / f"part-{k:03d}.parquet")
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


class _MotoServer:
    """``moto_server`` on a free loopback port, with fake credentials in the environment; stopped on exit."""

    def __enter__(self) -> str:
        exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError("moto_server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _tokenize(batch: Any, max_length: int) -> dict[str, np.ndarray]:
    from raycad.model.tokenizer import CaduceusTokenizer

    enc = CaduceusTokenizer().encode_batch(batch.column("sequence"), max_length)
    return {"input_ids": enc.input_ids, "label": batch.column("label").to_numpy()}


def _end_to_end(uri: str, max_length: int, **options: Any) -> tuple[int, float]:
    """(records, seconds) to list, read, tokenize and stream every batch to the driver."""
    from raycad.data.sources import read_sequences

    start = time.perf_counter()
    ds = read_sequences(uri, **options).map_batches(_tokenize, batch_format="pyarrow",
                                                    fn_kwargs={"max_length": max_length})
    n = sum(len(b["label"]) for b in ds.iter_batches(batch_size=4096, batch_format="numpy"))
    return n, time.perf_counter() - start


def bench_s3_vs_local(n_sequences: int = 200_000, length: int = 251, n_files: int = 8,
                      repeats: int = 3) -> tuple[dict[str, Any], str]:
    """Sequences/s through read_sequences + tokenization from local parquet vs the local S3 endpoint."""
    import boto3
    import ray

    from raycad.runtime import init_ray

    init_ray()
    with tempfile.TemporaryDirectory(prefix="raycad-bench-") as tmp, _MotoServer() as endpoint:
        folder = Path(tmp) / "parquet"
        size = _write_parquet_shards(folder, n_sequences, length, n_files)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        for path in sorted(folder.glob("*.parquet")):
            s3.upload_file(str(path), "bench", f"parquet/{path.name}")
        runs = {"local": (str(folder), {}), "s3": ("s3://bench/parquet", {"s3_endpoint": endpoint})}
        _end_to_end(str(folder), length, limit=1000)  # warm up the workers
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved, so machine load affects both alike
            for name, (uri, options) in runs.items():
                n, seconds = _end_to_end(uri, length, **options)
                if n != n_sequences:
                    raise RuntimeError(f"{name}: read {n} records, expected {n_sequences}")
                times[name].append(seconds)
    best = {name: min(t) for name, t in times.items()}
    rate = {name: n_sequences / best[name] for name in best}
    ratio = rate["s3"] / rate["local"]
    result = {"sequences": n_sequences, "length": length, "files": n_files, "parquet_bytes": size,
              "cpus": int(ray.cluster_resources().get("CPU", 0)), "seconds": times,
              "local_seq_per_s": rate["local"], "s3_seq_per_s": rate["s3"], "s3_over_local": ratio}
    markdown = "\n".join([
        "### S3 vs local, end to end (read_sequences -> tokenize map_batches -> iter_batches)",
        "",
        (f"{n_sequences:,} sequences x {length} bp, {n_files} parquet files ({size / 2**20:.1f} MiB), "
        f"Ray local with {result['cpus']} CPUs; S3 = moto_server on 127.0.0.1; best of {repeats}."),
        "",
        "| source | sequences/s | seconds (best) |",
        "|---|---:|---:|",
        f"| local parquet | {rate['local']:,.0f} | {best['local']:.2f} |",
        f"| s3:// (moto) | {rate['s3']:,.0f} | {best['s3']:.2f} |",
        "",
        f"S3 / local = **{ratio:.0%}** (target >= 50%: {'met' if ratio >= 0.5 else 'NOT met'}).",
    ])
    return result, markdown


# ---- driver ----------------------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[argparse.Namespace], tuple[dict[str, Any], str]]] = {
    "s3": lambda args: bench_s3_vs_local(args.s3_sequences, args.s3_length, args.s3_files, args.repeats),
}


def write_section(fragments: list[str], command: str) -> None:
    """Replace (or append) the ``## Data`` section of BENCHMARKS.md, leaving other sections alone."""
    header = (f"{SECTION}\n\n_Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}); command: `{command}`; date: "
              f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}._\n")
    body = header + "\n" + "\n\n".join(fragments) + "\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + body
    BENCHMARKS_MD.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--s3-sequences", type=int, default=200_000)
    parser.add_argument("--s3-length", type=int, default=251)
    parser.add_argument("--s3-files", type=int, default=8)
    parser.add_argument("--write", action="store_true", help=f"update the {SECTION!r} section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console()
    fragments = []
    for name in args.only or sorted(BENCHMARKS):
        console.rule(f"bench {name}")
        result, markdown = BENCHMARKS[name](args)
        console.print(result)
        console.print(markdown)
        fragments.append(markdown)
    if args.write:
        write_section(fragments, "python bench/data.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        console.print(f"wrote {SECTION!r} in {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
