"""Training benchmarks; results go to the ``## Training`` section of BENCHMARKS.md.

* ``throughput``: training sequences/s through Ray Train (`TorchTrainer`, 1 worker, Ray Data ingest via
  ``get_dataset_shard`` + `raycad.data.iter_batches`, DDP-ready loop of `train_loop_per_worker`) against a plain
  single-process PyTorch loop on the same model, the same tokenized bundled training data, the same batch size
  and the same torch thread count. Only the training phase is timed on both sides (Ray's per-epoch
  ``train_time_s``; the plain loop's wall time over the same number of batches). Target: Ray >= 0.9x plain.
* ``baseline``: the built-in k-mer logistic regression (`raycad.baseline`; k and C picked on validation) on the
  bundled split, the bar a fine-tuned model has to clear.
* ``main``: the main job, ``raycad finetune`` with no arguments (bundled demo, default config, 2 CPU workers),
  as a subprocess: wall time and test metrics from its results.json.

* ``scan``: the issue-12 setting of "87 seq/s (2 workers)": Ray Train with 2 workers of 1 torch thread each
  (`TorchTrainer`, DDP, the real loop and ingest) on ``--records`` bundled training records (251 bp), the demo
  preset caduceus-ph-1k-d64-l2 (or ``--set model.preset=...``), batch 32, one epoch, with ``model.scan_impl=chunked``
  and with the default (fused) scan, alternating, best of ``--repeats``; training phase seq/s (Ray's
  ``train_time_s``).
* ``seeds``: ``raycad finetune`` once per ``--seeds`` value (``--parallel`` runs them at once), the model's
  test metrics against the k-mer baseline fitted beside it, per seed and as mean and max - min.
* ``recipe``: a candidate default (``--set`` overrides) screened without Ray: the single-process loop, one
  thread, validation and test accuracy after every epoch, per ``--seeds`` value.

    python bench/train.py --only baseline throughput main --write
    python bench/train.py --only seeds --seeds 0 1 2 --write
    python bench/train.py --only scan --records 2048 --repeats 2
    python bench/train.py --only recipe --seeds 0 --set model.preset=caduceus-ps-1k-d64-l2 --set train.epochs=5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTION = "## Training"
DEMO_NOTE = ("Bundled demo = a stratified 80/10/10 split (7,226 / 904 / 904) of the published *test* split of "
             "Genomic Benchmarks human_nontata_promoters; not comparable to published results.")


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# ---- baseline ----------------------------------------------------------------------------------------------------


def bench_baseline(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The built-in baseline (`raycad.baseline`, what ``raycad baseline`` runs) on the bundled demo."""
    from raycad.baseline import describe, run_baseline
    from raycad.config import FinetuneConfig

    cfg = FinetuneConfig()
    result, _ = run_baseline(cfg)
    res = {"config": describe(result), **{k: result[k] for k in ("k", "C", "val_accuracy", "test_accuracy",
                                                                 "test_f1", "test_mcc", "test_auroc", "fit_time_s")}}
    md = (f"### Baseline: logistic regression on k-mer counts\n\n{DEMO_NOTE} `raycad baseline` (`raycad.baseline`, "
          f"also run beside every `raycad finetune`): L2-normalised k-mer counts, k in {cfg.baseline.k} and C in "
          f"{cfg.baseline.C} chosen on validation ({describe(result)}), trained on the "
          f"{result['records']['train']:,} training records in {result['fit_time_s']:.1f} s.\n\n"
          "| model | test accuracy | macro F1 | MCC | AUROC |\n|---|---:|---:|---:|---:|\n"
          f"| {describe(result)} | {res['test_accuracy']:.4f} | {res['test_f1']:.4f} | {res['test_mcc']:.4f} "
          f"| {res['test_auroc']:.4f} |\n")
    return res, md


# ---- throughput ----------------------------------------------------------------------------------------------------


def train_plain(cfg, n_batches: int, threads: int, records: int | None = None,
                on_epoch: Callable[[int, Any], None] | None = None) -> tuple[Any, float]:
    """A single-process training loop (same model build, optimizer, schedule, batch size, threads and RC
    augmentation as the Ray loop) over the first ``records`` bundled training records (all by default), in a
    seeded (``cfg.train.seed``) order; returns the trained model and its sequences/s. ``on_epoch(epoch, model)``
    runs after every full pass over the records (not timed)."""
    import numpy as np
    import pandas as pd
    import torch

    from raycad.data.loader import BUNDLED_DEMO
    from raycad.model import CaduceusTokenizer
    from raycad.model.tokenizer import reverse_complement_ids
    from raycad.train.build import build_model
    from raycad.train.loop import _optimizer_step, build_optimizer, build_scheduler

    torch.set_num_threads(threads)
    demo = pd.read_parquet(BUNDLED_DEMO)
    train = demo[demo.split == "train"].head(records)
    ids = CaduceusTokenizer().encode_batch(train.sequence.tolist(), 251).input_ids.astype(np.int64)
    labels = train.label.to_numpy().astype(np.int64)
    model = build_model(cfg, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, n_batches)
    params = [p for p in model.parameters() if p.requires_grad]
    bs, rng = cfg.train.batch_size, np.random.default_rng(cfg.train.seed)
    order = rng.permutation(len(ids))
    model.train()
    start, paused = time.perf_counter(), 0.0
    per_epoch = len(ids) // bs
    for i in range(n_batches):
        if on_epoch is not None and i and i % per_epoch == 0:
            paused -= time.perf_counter()
            on_epoch(i // per_epoch, model)
            model.train()
            paused += time.perf_counter()
        rows = order[(i * bs) % len(ids):][:bs]
        batch = ids[rows].copy()
        flip = rng.random(len(rows)) < cfg.data.rc_augment
        batch[flip] = reverse_complement_ids(batch[flip], padding_side="left")
        loss = model(input_ids=torch.from_numpy(batch), labels=torch.from_numpy(labels[rows])).loss
        loss.backward()
        _optimizer_step(opt, sched, None, params, cfg.train.grad_clip)
    seconds = time.perf_counter() - start - paused
    if on_epoch is not None and n_batches % per_epoch == 0:
        on_epoch(n_batches // per_epoch, model)
    return model, n_batches * bs / seconds


def bench_throughput(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from raycad.config import FinetuneConfig
    from raycad.data import prepare_datasets
    from raycad.runtime import init_ray
    from raycad.train.trainer import build_trainer

    threads = args.threads
    n_train = args.records
    cfg = FinetuneConfig().with_overrides({
        "scaling.num_workers": 1, "scaling.cpus_per_worker": 1.0, "train.torch_threads": threads,
        "train.epochs": 1, "data.limit": n_train, "run.output_dir": tempfile.mkdtemp(prefix="raycad-bench-")})
    n_batches = n_train // cfg.train.batch_size
    from ray.data import DataContext

    # The machine is shared: alternate plain / Ray runs and keep the best of each, so a load spike during
    # one run does not decide the ratio.
    init_ray(num_cpus=os.cpu_count())
    DataContext.get_current().enable_progress_bars = False
    data = prepare_datasets(cfg)
    data.datasets = {k: ds.materialize() for k, ds in data.datasets.items() if k != "test"}
    plains, rays = [], []
    for rep in range(args.repeats):
        plains.append(train_plain(cfg, n_batches, threads)[1])
        result = build_trainer(cfg, data, name=f"bench-throughput-{rep}", num_train=n_train).fit()
        rays.append(result.return_value["history"][0]["train_sequences_per_s"])
    plain, ray_sps = max(plains), max(rays)
    ratio = ray_sps / plain
    res = {"plain_sequences_per_s": plain, "ray_sequences_per_s": ray_sps, "ratio": ratio, "threads": threads,
           "records": n_train, "batch_size": cfg.train.batch_size, "load": _load()}
    model = cfg.model.preset + (f" + {cfg.model.overrides}" if cfg.model.overrides else "")
    md = (f"### Throughput: Ray Train + Ray Data vs a plain PyTorch loop\n\n"
          f"Model `{model}`, {n_train:,} bundled training records (251 bp), batch {cfg.train.batch_size}, AdamW, "
          f"RC augmentation, {threads} torch thread(s) on both sides; Ray: `TorchTrainer` with 1 worker fed by "
          f"`get_dataset_shard` + `iter_batches` (materialized dataset); training phase only; best of "
          f"{args.repeats} alternating runs each (plain: {', '.join(f'{x:.1f}' for x in plains)}; Ray: "
          f"{', '.join(f'{x:.1f}' for x in rays)} seq/s). "
          f"Load average at the end: {res['load']} (shared machine).\n\n"
          "| loop | sequences/s |\n|---|---:|\n"
          f"| plain single-process PyTorch | {plain:.1f} |\n| Ray Train + Ray Data | {ray_sps:.1f} |\n\n"
          f"Ray / plain = **{ratio:.2f}x** (target >= 0.9x: {'met' if ratio >= 0.9 else 'NOT met'}).\n")
    return res, md


def bench_scan(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from raycad.config import FinetuneConfig
    from raycad.data import prepare_datasets
    from raycad.runtime import init_ray
    from raycad.train.trainer import build_trainer

    cfg = FinetuneConfig.load(overrides=[
        "model.preset=caduceus-ph-1k-d64-l2", "scaling.num_workers=2", "train.torch_threads=1",
        "train.batch_size=32", "train.epochs=1", f"data.limit={args.records}", "baseline.enabled=false",
        f"run.output_dir={tempfile.mkdtemp(prefix='raycad-bench-')}", *args.set])
    init_ray(num_cpus=os.cpu_count())
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    data = prepare_datasets(cfg)
    data.datasets = {k: ds.materialize() for k, ds in data.datasets.items() if k != "test"}
    load_before = _load()
    runs: dict[str, list[float]] = {"chunked": [], "fused": []}
    for rep in range(args.repeats):
        for impl, done in runs.items():
            run_cfg = cfg.with_overrides({"model.scan_impl": "chunked" if impl == "chunked" else "auto"})
            result = build_trainer(run_cfg, data, name=f"bench-scan-{impl}-{rep}", num_train=args.records).fit()
            done.append(result.return_value["history"][0]["train_sequences_per_s"])
            print(f"{impl}: {done[-1]:.1f} seq/s", flush=True)
    best = {k: max(v) for k, v in runs.items()}
    ratio = best["fused"] / best["chunked"]
    res = {**{f"{k}_sequences_per_s": v for k, v in best.items()}, "runs": runs, "ratio": ratio,
           "records": args.records, "load_before": load_before, "load_after": _load()}
    md = (f"### Training step through Ray Train, 2 workers: fused vs chunked scan\n\n"
          f"`{cfg.model.preset}`, {args.records:,} bundled training records (251 bp), batch 32 (16 per worker), "
          f"2 Ray Train workers of 1 torch thread, one epoch, training phase only; best of {args.repeats} "
          f"alternating runs (chunked: {', '.join(f'{x:.1f}' for x in runs['chunked'])}; fused: "
          f"{', '.join(f'{x:.1f}' for x in runs['fused'])} seq/s). Load average {load_before} before, "
          f"{res['load_after']} after.\n\n| scan | train seq/s |\n|---|---:|\n"
          f"| chunked | {best['chunked']:.1f} |\n| fused (default) | {best['fused']:.1f} |\n\n"
          f"fused / chunked = **{ratio:.2f}x** (target >= 3x: {'met' if ratio >= 3 else 'not met'}).\n")
    return res, md


# ---- the main job --------------------------------------------------------------------------------------------------


def bench_main(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    out = Path(tempfile.mkdtemp(prefix="raycad-main-"))
    cmd = [sys.executable, "-m", "raycad.cli", "finetune", "--output", str(out), "--name", "main"]
    load_before = _load()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=out)
    wall = time.perf_counter() - start
    results = json.loads((out / "main" / "results.json").read_text())
    test = results["test_metrics"]
    cfg = results["config"]
    res = {"wall_s": wall, **{k: test[k] for k in ("test_accuracy", "test_f1", "test_mcc", "test_auroc")},
           "epochs": results["epochs_run"], "best_epoch": results["best_epoch"],
           "train_sequences_per_s": results["train_sequences_per_s"], "parameters": results["parameters"],
           "load_before": load_before, "load_after": _load()}
    model = cfg["model"]["preset"] + (f" + {cfg['model']['overrides']}" if cfg["model"]["overrides"] else "")
    md = (f"### Main job: `raycad finetune` (no arguments)\n\n{DEMO_NOTE} Default config: `{model}`, "
          f"{cfg['train']['epochs']} epochs, batch {cfg['train']['batch_size']}, lr {cfg['optim']['lr']:g}, "
          f"{cfg['scaling']['num_workers']} CPU workers; {res['parameters']['total']:,} parameters. "
          f"Load average {load_before} before / {res['load_after']} after (shared machine: wall times are "
          "pessimistic).\n\n"
          "| | wall time | test accuracy | macro F1 | MCC | AUROC | train seq/s |\n|---|---:|---:|---:|---:|---:|---:|\n"
          f"| raycad finetune | {wall / 60:.1f} min | {res['test_accuracy']:.4f} | {res['test_f1']:.4f} | "
          f"{res['test_mcc']:.4f} | {res['test_auroc']:.4f} | {res['train_sequences_per_s']:.1f} |\n\n"
          f"Best epoch {res['best_epoch']} of {res['epochs']}; target < 15 min and >= 0.80 test accuracy.\n")
    return res, md


def bench_seeds(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """``raycad finetune`` (no arguments but the seed) for each of ``--seeds``: the model against the k-mer
    baseline fitted beside it on the same records, per seed and as mean and spread (max - min)."""
    import numpy as np

    out = Path(tempfile.mkdtemp(prefix="raycad-seeds-"))
    load_before = _load()
    procs = {}
    start = time.perf_counter()
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "raycad.cli", "finetune", "--output", str(out), "--name", f"seed{seed}",
               "--set", f"train.seed={seed}", *[f"--set={o}" for o in args.set]]
        procs[seed] = subprocess.Popen(cmd, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not args.parallel:
            procs[seed].wait()
    walls = {}
    for seed, proc in procs.items():
        if proc.wait():
            raise RuntimeError(f"seed {seed}: raycad finetune exited with {proc.returncode} (logs: {out})")
        walls[seed] = json.loads((out / f"seed{seed}" / "results.json").read_text())["timings"]["total_s"]
    rows = []
    for seed in args.seeds:
        results = json.loads((out / f"seed{seed}" / "results.json").read_text())
        test, base = results["test_metrics"], results["baseline"]
        rows.append({"seed": seed, "wall_s": walls[seed], "train_sequences_per_s": results["train_sequences_per_s"],
                     "best_epoch": results["best_epoch"], "epochs": results["epochs_run"],
                     **{f"model_{m}": test[f"test_{m}"] for m in ("accuracy", "f1", "mcc", "auroc")},
                     **{f"baseline_{m}": base[f"test_{m}"] for m in ("accuracy", "f1", "mcc", "auroc")},
                     "baseline": f"{base['k']}-mer LR (C={base['C']:g})"})
    stats = {key: (float(np.mean([r[key] for r in rows])), max(r[key] for r in rows) - min(r[key] for r in rows))
             for key in rows[0] if key.startswith(("model_", "baseline_")) and key != "baseline"}
    wins = sum(r["model_accuracy"] > r["baseline_accuracy"] for r in rows)
    cfg = json.loads((out / f"seed{args.seeds[0]}" / "results.json").read_text())["config"]
    res = {"rows": rows, "stats": stats, "wins": wins, "load_before": load_before, "load_after": _load(),
           "total_wall_s": time.perf_counter() - start}
    model = cfg["model"]["preset"] + (f" + {cfg['model']['overrides']}" if cfg["model"]["overrides"] else "")
    how = "concurrently" if args.parallel else "one after another"
    extra = f" with {' '.join(f'`--set {o}`' for o in args.set)}" if args.set else ""
    md = (f"### Main job, {len(rows)} seeds: model against the k-mer baseline\n\n{DEMO_NOTE} `raycad finetune`"
          f"{extra} with `train.seed` in {list(args.seeds)}, run {how}: `{model}`, {cfg['train']['epochs']} epochs, "
          f"batch {cfg['train']['batch_size']}, lr {cfg['optim']['lr']:g}, schedule {cfg['schedule']['name']}, "
          f"rc_augment {cfg['data']['rc_augment']:g}, head {cfg['head']['hidden_sizes'] or 'linear'} "
          f"({cfg['head']['pooling']} pooling); {cfg['scaling']['num_workers']} CPU workers. The baseline is fitted "
          f"beside each run on the same records. Load average {load_before} before / {res['load_after']} after "
          "(shared machine: wall times and sequences/s are measured under that load).\n\n"
          "| seed | model acc | model F1 | model MCC | model AUROC | baseline acc | wall time | train seq/s |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|\n"
          + "".join(f"| {r['seed']} | {r['model_accuracy']:.4f} | {r['model_f1']:.4f} | {r['model_mcc']:.4f} | "
                    f"{r['model_auroc']:.4f} | {r['baseline_accuracy']:.4f} | {r['wall_s'] / 60:.1f} min | "
                    f"{r['train_sequences_per_s']:.1f} |\n" for r in rows)
          + f"| mean ± (max - min) | {stats['model_accuracy'][0]:.4f} ± {stats['model_accuracy'][1]:.4f} | "
          f"{stats['model_f1'][0]:.4f} ± {stats['model_f1'][1]:.4f} | {stats['model_mcc'][0]:.4f} ± "
          f"{stats['model_mcc'][1]:.4f} | {stats['model_auroc'][0]:.4f} ± {stats['model_auroc'][1]:.4f} | "
          f"{stats['baseline_accuracy'][0]:.4f} | | |\n\n"
          f"The model beats the baseline's test accuracy in {wins} of {len(rows)} seeds.\n")
    return res, md


# ---- a candidate recipe, without Ray --------------------------------------------------------------------------------


def bench_recipe(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """A candidate default (``--set`` overrides on the default config) trained by the single-process loop
    (`train_plain`, one thread per run) for ``train.epochs`` on the full bundled training split, once per seed;
    validation and test accuracy (both strands conjoined, as ``raycad finetune`` scores) after every epoch.
    A cheap screen between a sweep and the ``seeds`` check of the real job; not a substitute for either."""
    import pandas as pd
    import torch

    from raycad.config import FinetuneConfig
    from raycad.data.batching import PaddingRule
    from raycad.data.loader import BUNDLED_DEMO
    from raycad.infer import ModelSpec, Predictor

    demo = pd.read_parquet(BUNDLED_DEMO)
    splits = {name: demo[demo.split == name] for name in ("validation", "test")}
    load_before, rows = _load(), []
    for seed in args.seeds:
        cfg = FinetuneConfig.load(overrides=[*args.set, f"train.seed={seed}", "scaling.num_workers=1"])
        curve: list[dict[str, Any]] = []
        spec = ModelSpec(("0", "1"), PaddingRule(cfg.data.max_length or 251, "max_length"), conjoin=True)

        def score(epoch: int, model: Any, curve: list = curve, spec: Any = spec, seed: int = seed) -> None:
            predict = Predictor.from_model(model.eval(), spec, device="cpu")
            with torch.inference_mode():
                acc = {name: float(((predict({"sequence": df.sequence.to_numpy()})["prob_1"] > 0.5)
                                    == df.label.to_numpy()).mean()) for name, df in splits.items()}
            curve.append({"epoch": epoch, **acc})
            print(f"seed {seed} epoch {epoch}: val {acc['validation']:.4f} test {acc['test']:.4f}", flush=True)

        cpu = time.process_time()
        n_train = int((demo.split == "train").sum())
        _, rate = train_plain(cfg, cfg.train.epochs * (n_train // cfg.train.batch_size), threads=1, on_epoch=score)
        rows.append({"seed": seed, "curve": curve, "train_seq_per_cpu_s": rate, "cpu_s": time.process_time() - cpu})
    overrides = " ".join(f"`{o}`" for o in args.set) or "none (the default config)"
    md = (f"### Recipe screen (single-process loop): {overrides}\n\n{DEMO_NOTE} `train_plain` (bench/train.py), "
          f"1 torch thread, full training split, accuracy with both strands conjoined. Load average {load_before} "
          f"before / {_load()} after.\n\n| seed | " + " | ".join(f"epoch {c['epoch']} val / test" for c in rows[0]["curve"])
          + " |\n|---|" + "---:|" * len(rows[0]["curve"]) + "\n"
          + "".join(f"| {r['seed']} | " + " | ".join(f"{c['validation']:.4f} / {c['test']:.4f}" for c in r["curve"])
                    + " |\n" for r in rows))
    return {"rows": rows}, md


BENCHMARKS: dict[str, Callable[[argparse.Namespace], tuple[dict[str, Any], str]]] = {
    "baseline": bench_baseline,
    "throughput": bench_throughput,
    "scan": bench_scan,
    "main": bench_main,
    "seeds": bench_seeds,
    "recipe": bench_recipe,
}


def write_section(fragments: list[str], command: str, section: str = SECTION) -> None:
    """Replace, inside the ``section`` (default ``## Training``) of BENCHMARKS.md, each ``### title`` block
    that ran (the section is appended when missing)."""
    heading = section
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    match = re.search(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", text, flags=re.DOTALL | re.MULTILINE)
    section = match.group(0) if match else f"{heading}\n\n"
    header = (f"_Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}); command: `{command}`; date: {dt.datetime.now():%Y-%m-%d %H:%M}._\n\n")
    section = re.sub(r"^_Machine:.*?\n\n", "", section[len(heading) + 1:].lstrip("\n"), flags=re.DOTALL)
    for fragment in fragments:
        title = fragment.splitlines()[0]
        block = re.search(rf"^{re.escape(title)}\n.*?(?=^### |\Z)", section, flags=re.DOTALL | re.MULTILINE)
        section = (section.replace(block.group(0), fragment + "\n") if block else section + fragment + "\n")
    new = f"{heading}\n\n{header}{section.rstrip()}\n"
    text = text.replace(match.group(0), new + "\n") if match else text.rstrip() + "\n\n" + new
    BENCHMARKS_MD.write_text(text)


def run_benchmarks(parser: argparse.ArgumentParser, benchmarks: dict[str, Callable], script: str,
                   section: str = SECTION, argv: list[str] | None = None, default: list[str] | None = None) -> int:
    """Add ``--only`` / ``--write`` to ``parser``, run the chosen benchmarks (JSON on stdout), and with
    ``--write`` put their markdown into ``section`` of BENCHMARKS.md. ``default``: what runs without
    ``--only`` (all of them if None)."""
    parser.add_argument("--only", nargs="+", choices=list(benchmarks), default=default or list(benchmarks))
    parser.add_argument("--write", action="store_true", help=f"update the {section} section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    fragments = []
    for name in args.only:
        res, md = benchmarks[name](args)
        print(json.dumps({name: res}, indent=1, default=str), flush=True)
        fragments.append(md)
    if args.write:
        write_section(fragments, f"python {script} " + " ".join(sys.argv[1:] if argv is None else argv), section)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (throughput)")
    parser.add_argument("--records", type=int, default=1024, help="training records timed (throughput, scan)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs (throughput, scan)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values (seeds)")
    parser.add_argument("--parallel", action="store_true", help="run the seeds concurrently (seeds)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra raycad finetune override (seeds, scan)")
    return run_benchmarks(parser, BENCHMARKS, "bench/train.py", argv=argv,
                          default=["baseline", "throughput", "main"])


if __name__ == "__main__":
    sys.exit(main())
