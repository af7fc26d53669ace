"""``raycad predict`` throughput and memory: the old in-process path against the Ray Data actor path.

    python bench/predict.py speed [--repeats 2]        # bundled 9,034 sequences, demo-preset model, 2 CPUs
    python bench/predict.py memory --n 20000 80000     # peak RSS of driver + Ray processes vs input size
    python bench/predict.py memory --n 2000000 --length 64
    python bench/predict.py calls                      # records per model call on CPU: throughput per thread

``speed`` scores the bundled demo's 9,034 sequences (as FASTA) with a model of the demo preset
(caduceus-ph-1k-d64-l2; random weights cost what trained ones cost), in one process, interleaved, best of
``--repeats``:

- ``old``: the in-process ``predict_file`` of raycad before `raycad.infer` (loaded from git revision
  ``OLD_REV``), pads to max_length, torch on 2 threads; run with the chunked scan ("today's") and with the
  default scan;
- ``new``: `raycad.infer.predict` on a private 2-CPU Ray instance (actors as ``raycad predict`` places them).

``memory`` writes generated FASTA files of ``--n`` random records of ``--length`` bp (251) and runs
`raycad.infer.predict` on each, sampling the RSS of this process and of all its descendant processes (Ray's
raylet, workers and actors) every 0.2 s; flat peaks across N show the streaming keeps memory bounded. It
checks that the output has one row per record.

``calls`` times an in-process `Predictor` (1 thread) per cap on the tokens of one model call on CPU: the old
128-record calls, other caps and `raycad.data.batching.cpu_tokens_per_call` (the default).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OLD_REV = "8ddfcc1"
"""The last main commit with the in-process ``raycad/train/predict.py``."""


def export_demo_model(directory: Path) -> Path:
    from raycad.config import FinetuneConfig
    from raycad.data.batching import PaddingRule
    from raycad.train.build import build_model
    from raycad.train.checkpoint import export_model

    cfg = FinetuneConfig.load(overrides=["model.preset=caduceus-ph-1k-d64-l2"])  # the model of earlier runs
    model = build_model(cfg, 2, ["0", "1"])
    meta = {"class_names": ["0", "1"], **PaddingRule.from_config(cfg.data, 251).to_meta(),
            "truncation": "right", "conjoin_eval": True, "config": cfg.to_dict()}
    return export_model(model, directory, meta=meta)


def demo_fasta(path: Path, records: int | None = None) -> int:
    """The bundled demo's sequences as FASTA (the first ``records`` of them when given)."""
    import pandas as pd

    from raycad.data.loader import BUNDLED_DEMO

    demo = pd.read_parquet(BUNDLED_DEMO).iloc[:records]
    path.write_text("".join(f">{i}\n{s}\n" for i, s in zip(demo.id, demo.sequence)))
    return len(demo)


def old_predict_file():
    """``predict_file`` as it was at `OLD_REV` (git show), imported as a module."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_REV}:raycad/train/predict.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_predict.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_predict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.predict_file


def speed(repeats: int, records: int | None = None) -> None:
    import torch

    from raycad.infer import predict
    from raycad.runtime import init_ray

    print(f"load before: {os.getloadavg()}", flush=True)
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="raycad-bench-predict-"))
    model = export_demo_model(work / "model")
    n = demo_fasta(work / "demo.fa", records)
    old = old_predict_file()
    init_ray(num_cpus=2)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name in ("old, chunked scan", "old, default scan", "new"):
            os.environ["RAYCAD_SELECTIVE_SCAN"] = "chunked" if "chunked" in name else "auto"
            start = time.perf_counter()
            if name == "new":
                predict(model, work / "demo.fa", work / "new.parquet")
            else:
                old(model, work / "demo.fa", work / "old.csv")
            seconds = time.perf_counter() - start
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"{name}: {seconds:.1f} s", flush=True)
    import pandas as pd

    a = pd.read_csv(work / "old.csv")[["prob_0", "prob_1"]].to_numpy()
    b = pd.read_parquet(work / "new.parquet")[["prob_0", "prob_1"]].to_numpy()
    print(f"max |old - new| probability: {np.abs(a - b).max():.2e}")
    base = best["old, chunked scan"]
    print(f"\n| path | best of {repeats} (s) | seq/s | vs old, chunked scan |\n|---|---:|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {n / seconds:.0f} | {base / seconds:.2f}x |")
    print(f"{n} sequences; load: {os.getloadavg()}")


def calls(shapes: list[str], tokens: list[int], records: int, repeats: int) -> None:
    """In-process `Predictor` throughput (1 thread, conjoined for Ph) per cap on the tokens of a model call:
    ``max_tokens`` None is the old 128-record call, "auto" `raycad.data.batching.cpu_tokens_per_call`."""
    import torch

    from raycad.data.batching import PaddingRule, rows_per_call
    from raycad.infer.predictor import ModelSpec, Predictor
    from raycad.model import CaduceusConfig, CaduceusForSequenceClassification

    torch.set_num_threads(1)
    print(f"load before: {os.getloadavg()}", flush=True)
    print(f"| preset | bp | tokens per call | records per call | records/s (best of {repeats}) |\n"
          "|---|---:|---:|---:|---:|", flush=True)
    rng = np.random.default_rng(0)
    for shape in shapes:
        preset, length = shape.rsplit(":", 1)[0], int(shape.rsplit(":", 1)[1])
        torch.manual_seed(0)
        model = CaduceusForSequenceClassification(CaduceusConfig.from_preset(preset, num_labels=2, conjoin_eval=True))
        spec = ModelSpec(("0", "1"), PaddingRule(length, "longest", 16), conjoin=True)
        bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size=(records, length))]
        batch = {"sequence": np.array([row.tobytes().decode() for row in bases], dtype=object)}
        predictor = Predictor.from_model(model, spec, batch_size=128, device="cpu")
        auto = predictor.max_tokens
        predictor({"sequence": batch["sequence"][:8]})  # warm-up: kernels, allocations
        for cap in [None, *tokens, auto]:
            predictor.max_tokens = cap
            best = min(_timed(predictor, batch) for _ in range(repeats))
            per_call = rows_per_call(length, 128, cap)
            label = "128 records" if cap is None else f"{cap}" + (" (auto)" if cap == auto else "")
            print(f"| {preset} | {length} | {label} | {per_call} | {records / best:.1f} |", flush=True)
    print(f"load: {os.getloadavg()}")


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def sample_rss(me, peaks: dict[str, int], stop: threading.Event) -> None:
    """Peak RSS of ``me`` and of ``me`` plus all its descendants, sampled every 0.2 s until ``stop``."""
    import psutil

    while not stop.is_set():
        driver = me.memory_info().rss
        total = driver
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        peaks["driver"], peaks["all"] = max(peaks["driver"], driver), max(peaks["all"], total)
        time.sleep(0.2)


def memory(sizes: list[int], length: int = 251) -> None:
    import psutil
    import pyarrow.parquet as pq

    from raycad.infer import predict
    from raycad.runtime import init_ray

    work = Path(tempfile.mkdtemp(prefix="raycad-bench-predict-mem-"))
    model = export_demo_model(work / "model")
    init_ray(num_cpus=2)
    me = psutil.Process()
    print(f"load before: {os.getloadavg()}", flush=True)
    print("| records | bp | FASTA MB | seconds | records/s | peak driver RSS (MB) | peak RSS of all processes (MB) |\n"
          "|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rng = np.random.default_rng(0)
    for n in sizes:
        fasta = work / f"r{n}.fa"
        with fasta.open("w") as handle:
            for start in range(0, n, 10_000):
                k = min(10_000, n - start)
                bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size=(k, length))]
                handle.write("".join(f">r{start + i}\n{row.tobytes().decode()}\n" for i, row in enumerate(bases)))
        peaks = {"driver": 0, "all": 0}
        stop = threading.Event()
        thread = threading.Thread(target=sample_rss, args=(me, peaks, stop), daemon=True)
        thread.start()
        start = time.perf_counter()
        summary = predict(model, fasta, work / f"r{n}.parquet")
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        written = pq.read_metadata(work / f"r{n}.parquet").num_rows
        if summary.records != n or written != n:
            raise SystemExit(f"{n} records in, {summary.records} scored, {written} written")
        (work / f"r{n}.parquet").unlink()
        print(f"| {n:,} | {length} | {fasta.stat().st_size / 1e6:.0f} | {seconds:.0f} | {n / seconds:.0f} | "
              f"{peaks['driver'] / 2**20:,.0f} | {peaks['all'] / 2**20:,.0f} |", flush=True)
        fasta.unlink()
    print(f"load: {os.getloadavg()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    speed_args = sub.add_parser("speed")
    speed_args.add_argument("--repeats", type=int, default=2)
    speed_args.add_argument("--records", type=int, help="score only the first N bundled sequences")
    memory_args = sub.add_parser("memory")
    memory_args.add_argument("--n", type=int, nargs="+", default=[20_000, 80_000])
    memory_args.add_argument("--length", type=int, default=251, help="bp per generated record")
    calls_args = sub.add_parser("calls")
    calls_args.add_argument("--shapes", nargs="+", default=["caduceus-ph-1k-d64-l2:251", "caduceus-ph-1k-d64-l2:1024",
                                                            "caduceus-ps-1k-d256-l4:251"], metavar="PRESET:BP")
    calls_args.add_argument("--tokens", type=int, nargs="+", default=[4096, 1024], help="other caps to time")
    calls_args.add_argument("--records", type=int, default=256)
    calls_args.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.what == "speed":
        speed(args.repeats, args.records)
    elif args.what == "calls":
        calls(args.shapes, args.tokens, args.records, args.repeats)
    else:
        memory(args.n, args.length)
    return 0


if __name__ == "__main__":
    sys.exit(main())
