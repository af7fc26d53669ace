"""Data-layer benchmarks; results go to the ``## Data`` section of BENCHMARKS.md.

Each benchmark is a function returning a dict of results and a Markdown fragment, registered in
`BENCHMARKS`; ``python bench/data.py --only NAME`` runs a subset, and ``--write`` replaces the ``## Data``
section of BENCHMARKS.md with the fragments of the benchmarks that ran.

* ``tokenizer``: tokenization throughput (million bases/s) of raycad's vectorized `CaduceusTokenizer`
  against a plain per-character Python tokenizer that works like the authors' Hugging Face
  ``CaduceusTokenizer`` (split into characters, look each up in the vocabulary, truncate, pad on the left),
  on the bundled real sequences (251 bp) and on random variable-length sequences truncated to 1,024.
  Target: >= 50x the per-character tokenizer.
* ``s3``: end-to-end Ray Data throughput (sequences/s) of `raycad.data.sources.read_sequences` plus
  vectorized tokenization in ``map_batches``, from local parquet files vs the same files on a local S3
  endpoint (``moto_server`` on 127.0.0.1). Target: S3 >= 50% of local.

    python bench/data.py --only tokenizer --write
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


# ---- tokenizer throughput ----------------------------------------------------------------------------------------


class PerCharTokenizer:
    """The baseline: one Python step per character, like the authors' Hugging Face ``CaduceusTokenizer``
    (``_tokenize`` = the list of characters, ``_convert_token_to_id`` = a vocabulary lookup with [UNK]
    fallback), then truncation and left padding per record. Leaner than going through Hugging Face's
    ``PreTrainedTokenizer`` machinery, so the speed-up measured against it is a conservative one."""

    def __init__(self) -> None:
        from raycad.model.tokenizer import PAD_ID, UNK_ID, VOCAB

        self.vocab, self.unk, self.pad = dict(VOCAB), UNK_ID, PAD_ID

    def _tokenize(self, text: str) -> list[str]:
        return list(text.upper())

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.unk)

    def __call__(self, sequences: list[str], max_length: int) -> np.ndarray:
        rows = []
        for seq in sequences:
            ids = [self._convert_token_to_id(t) for t in self._tokenize(seq)][:max_length]
            rows.append([self.pad] * (max_length - len(ids)) + ids)
        return np.array(rows, dtype=np.int64)


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Best CPU time of the process over ``repeats`` calls (on a shared machine, wall time mostly measures
    the other tenants; everything timed here runs on one thread)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def bench_tokenizer(repeats: int = 5) -> tuple[dict[str, Any], str]:
    """Million input bases/s: per-character baseline vs raycad's tokenizer (HF call and Arrow batch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raycad.data.loader import BUNDLED_DEMO
    from raycad.model.tokenizer import CaduceusTokenizer

    real = pq.read_table(BUNDLED_DEMO, columns=["sequence"]).column("sequence").to_pylist()
    rng = np.random.default_rng(0)
    lengths = rng.integers(500, 1500, size=4000)
    letters = np.frombuffer(b"ACGTacgtN", dtype=np.uint8)
    synthetic = [letters[rng.integers(0, 9, size=n)].tobytes().decode() for n in lengths]
    reads = [letters[rng.integers(0, 4, size=n)].tobytes().decode() for n in rng.integers(50, 151, size=40_000)]
    workloads = {"bundled nontata, 9,034 x 251 bp, max_length 251": (real, 251),
                 "random 500-1,499 bp (soft-masked, N), 4,000 seqs, truncated to 1,024": (synthetic, 1024),
                 "random 50-150 bp reads, 40,000 seqs, padded to 150": (reads, 150)}
    tok, baseline = CaduceusTokenizer(), PerCharTokenizer()
    rows, result = [], {}
    for name, (seqs, max_length) in workloads.items():
        arrow = pa.array(seqs, pa.string())
        expected = baseline(seqs, max_length)
        got = tok(seqs, padding="max_length", max_length=max_length, truncation=True, return_tensors="np")
        if not (np.array_equal(got["input_ids"], expected)
                and np.array_equal(tok.encode_batch(arrow, max_length).input_ids, expected)):
            raise RuntimeError(f"{name}: vectorized tokenizer differs from the per-character baseline")
        bases = sum(map(len, seqs))
        runs = {
            "per-character Python": _best_seconds(lambda s=seqs, m=max_length: baseline(s, m), max(1, repeats // 2)),
            "raycad `tok(list)` (HF call)": _best_seconds(
                lambda s=seqs, m=max_length: tok(s, padding="max_length", max_length=m, truncation=True,
                                                 return_tensors="np"), repeats),
            "raycad `encode_batch(Arrow)` (map_batches path)": _best_seconds(
                lambda a=arrow, m=max_length: tok.encode_batch(a, m), repeats),
        }
        base = runs["per-character Python"]
        for method, seconds in runs.items():
            rows.append(f"| {name} | {method} | {bases / seconds / 1e6:,.1f} | {base / seconds:,.0f}x |")
        result[name] = {"bases": bases, "seconds": runs,
                        "speedup": {m: base / s for m, s in runs.items()}}
    arrow_key, call_key = "raycad `encode_batch(Arrow)` (map_batches path)", "raycad `tok(list)` (HF call)"
    pipeline = min(r["speedup"][arrow_key] for r in result.values())
    call = min(r["speedup"][call_key] for r in result.values())
    markdown = "\n".join([
        "### Tokenizer throughput (single process, no Ray)",
        "",
        (f"Input bases per CPU-second, best of {repeats} (baseline: best of {max(1, repeats // 2)}); "
         "outputs checked equal to the baseline first. Baseline = `PerCharTokenizer` in this script. "
         "`encode_batch` on an Arrow column is what the data pipeline's `map_batches` runs (uint8 output); "
         "the Hugging Face-style call also converts Python strings and returns int64 like Hugging Face."),
        "",
        "| workload | tokenizer | M bases/s | speed-up |",
        "|---|---|---:|---:|",
        *rows,
        "",
        (f"Pipeline path: **>= {pipeline:,.0f}x** the per-character tokenizer on every workload "
         f"(target >= 50x: {'met' if pipeline >= 50 else 'NOT met'}); Hugging Face-style call on Python "
         f"lists: >= {call:,.0f}x."),
    ])
    return {"workloads": result, "pipeline_speedup": pipeline, "call_speedup": call}, markdown


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
    "tokenizer": lambda args: bench_tokenizer(max(args.repeats, 3)),
    "s3": lambda args: bench_s3_vs_local(args.s3_sequences, args.s3_length, args.s3_files, args.repeats),
}


def write_section(fragments: list[str], command: str) -> None:
    """Update the ``## Data`` section of BENCHMARKS.md: each fragment (a ``### title`` block) replaces the block
    of the same title, blocks of benchmarks that did not run stay, other sections are left alone."""
    stamp = f"_Command: `{command}`; date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}._"
    header = (f"{SECTION}\n\n_Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}); each block says how it was run._\n")
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    old = pattern.search(text)
    blocks: dict[str, str] = {}
    if old:
        for block in re.split(r"(?m)^(?=### )", old.group(0)):
            if block.startswith("### "):
                blocks[block.splitlines()[0]] = block.strip()
    for fragment in fragments:
        title, _, rest = fragment.strip().partition("\n")
        blocks[title] = f"{title}\n\n{stamp}\n{rest}"
    body = header + "\n" + "\n\n".join(blocks.values()) + "\n"
    text = pattern.sub(lambda _: body + "\n", text) if old else text.rstrip() + "\n\n" + body
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
