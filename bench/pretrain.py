"""Pre-training benchmarks; results go to the ``## Pre-training`` section of BENCHMARKS.md.

* ``throughput``: masked-LM training tokens/s through Ray Train (`TorchTrainer`, 1 worker, Ray Data windows via
  ``get_dataset_shard`` + `MLMCollator`, the real `pretrain_loop_per_worker`) against a plain single-process
  loop doing the same work (same model build, AdamW, masking + RC augmentation per batch, loss on masked
  positions), for the demo preset and the released d256/l4 shape, alternating, best of ``--repeats``.
* ``usecase``: pre-train on the bundled demo's *training* split (sequences only, no labels, never a test
  record) with the real recipe on Ray, then fine-tune from that export and from random init with the same small
  budget (a single-process loop of raycad's pieces), 3 seeds each; test accuracy of each.

    python bench/pretrain.py --only throughput usecase --write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import DEMO_NOTE, _load, run_benchmarks, train_plain

SECTION = "## Pre-training"
PRESETS = {"demo": ("caduceus-ph-1k-d64-l2", 32, 24), "d256": ("caduceus-ps-1k-d256-l4", 8, 6)}
"""name -> (preset, batch size, optimizer steps timed): the demo preset and the released d256/l4 shape."""


# ---- throughput ------------------------------------------------------------------------------------------------------


def _plain_loop(cfg, steps: int) -> float:
    """Tokens/s of a single-process MLM loop over the same windows (the bundled training split, 251 tokens)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import torch

    from raycad.data.loader import BUNDLED_DEMO
    from raycad.data.preprocess import add_keys
    from raycad.model import CaduceusTokenizer
    from raycad.model.scan import scan_path
    from raycad.pretrain.loop import build_mlm_model
    from raycad.pretrain.loss import masked_lm_loss
    from raycad.pretrain.masking import MLMCollator
    from raycad.train.loop import _optimizer_step, build_optimizer, build_scheduler

    torch.set_num_threads(cfg.train.torch_threads)
    demo = pd.read_parquet(BUNDLED_DEMO)
    train = pa.Table.from_pandas(demo[demo.split == "train"][["sequence"]], preserve_index=False)
    keys = add_keys(train).column("key").to_numpy()
    ids = CaduceusTokenizer().encode_batch(train.column("sequence"), 251).input_ids
    model = build_mlm_model(cfg)
    scan_path("cpu")  # the scan kernels compile before the clock, as the Ray worker's setup does
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    collate = MLMCollator(cfg.mlm, rc_prob=cfg.data.rc_augment, salt=(cfg.train.seed, 0, 0))
    bs, order = cfg.train.batch_size, np.random.default_rng(0).permutation(len(ids))
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        rows = order[(i * bs) % len(ids):][:bs]
        batch = collate({"input_ids": ids[rows], "key": keys[rows]})
        loss = masked_lm_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"])
        loss.backward()
        _optimizer_step(opt, sched, None, params, cfg.train.grad_clip)
    return steps * bs * 251 / (time.perf_counter() - start)


def bench_throughput(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ray.data import DataContext

    from raycad.config import PretrainConfig
    from raycad.pretrain.data import prepare_pretrain_data
    from raycad.pretrain.recipe import build_pretrain_trainer, step_plan
    from raycad.runtime import init_ray

    load_before = _load()
    init_ray(num_cpus=os.cpu_count())
    DataContext.get_current().enable_progress_bars = False
    res: dict[str, Any] = {}
    for label in args.models:
        preset, batch, steps = PRESETS[label]
        cfg = PretrainConfig.load(overrides=[
            f"model.preset={preset}", "data.max_length=251", "data.val_fraction=0.01", "scaling.num_workers=1",
            "scaling.cpus_per_worker=1", f"train.torch_threads={args.threads}", f"train.batch_size={batch}",
            f"train.max_steps={steps}", f"train.log_every_steps={steps}", "train.eval_batch_size=8",
            "data.limit=2000", f"run.output_dir={tempfile.mkdtemp(prefix='raycad-bench-')}"])
        data = prepare_pretrain_data(cfg)
        data.datasets = {k: ds.materialize() for k, ds in data.datasets.items()}
        plan = step_plan(cfg, data.num_train)
        plains, rays, starts = [], [], []
        for rep in range(args.repeats):  # alternate: a load spike should not decide the ratio
            plains.append(_plain_loop(cfg, steps))
            result = build_pretrain_trainer(cfg, data, name=f"bench-{preset}-{rep}", plan=plan).fit()
            rays.append(result.return_value["history"][-1]["tokens_per_s"])
            starts.append(result.return_value["history"][-1]["data_start_s"])
        res[preset] = {"plain": plains, "ray": rays, "ratio": max(rays) / max(plains), "batch": batch,
                       "steps": steps, "ray_data_start_s": starts}
    res["load"], res["load_before"] = _load(), load_before
    return res, throughput_markdown(res, args.threads, args.repeats)


def throughput_markdown(res: dict[str, Any], threads: int, repeats: int) -> str:
    """The BENCHMARKS.md block of `bench_throughput`'s result."""
    runs = {f"`{preset}`": res[preset] for preset, _, _ in PRESETS.values() if preset in res}
    rows = [f"| {label} | {r['batch']} | {r['steps']} | {max(r['plain']):,.0f} | {max(r['ray']):,.0f} | "
            f"**{r['ratio']:.2f}x** | {min(r['ray_data_start_s']):.2f} |" for label, r in runs.items()]
    worst = min(r["ratio"] for r in runs.values())
    return (f"### Throughput: masked-LM step, Ray Train + Ray Data vs a plain PyTorch loop (CPU)\n\n"
            f"Windows of 251 tokens from the bundled training split; {threads} torch threads on both sides; "
            f"forward + masked-LM loss + backward + AdamW step, masking and RC augmentation per batch on both "
            f"sides; Ray: `TorchTrainer` with 1 worker and the real pre-training loop (materialized window "
            f"dataset; the tokens/s of its training band as the run reports it); plain: the same model, optimizer, "
            f"collator and loss in this process over pre-tokenized windows. Both sides compile the scan kernels "
            f"before their clock starts; the Ray band's clock starts at its first batch, and the time Ray Data took "
            f"to start the epoch's pipeline up to that batch is the last column (reported per epoch, "
            f"`data_start_s`). Best of {repeats} alternating runs (all runs, tokens/s: "
            + "; ".join(f"{label}: plain {', '.join(f'{x:,.0f}' for x in r['plain'])} / Ray "
                        f"{', '.join(f'{x:,.0f}' for x in r['ray'])}" for label, r in runs.items())
            + f"). Load average (1 min) {res['load_before']} before, {res['load']} after, on 2 cores (shared "
            "machine: absolute numbers are pessimistic; the alternation is what protects the ratio).\n\n"
            "| model | batch | steps | plain tokens/s | Ray tokens/s | Ray / plain | Ray Data epoch start (s) |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n"
            + "\n".join(rows)
            + f"\n\nWorst ratio **{worst:.2f}x** (target >= 0.9x: {'met' if worst >= 0.9 else 'NOT met'}). "
            "No GPU was lent to this task, so there is no GPU row.\n")


# ---- the use case ----------------------------------------------------------------------------------------------------


def _pretrain_export(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Run ``raycad pretrain`` on the bundled training split (or reuse ``--pretrained-run``); returns the
    export directory and the run's results.json."""
    from raycad.config import PretrainConfig
    from raycad.pretrain import pretrain

    if args.pretrained_run:
        run = Path(args.pretrained_run)
        return run / "model", json.loads((run / "results.json").read_text())
    out = Path(tempfile.mkdtemp(prefix="raycad-usecase-"))
    cfg = PretrainConfig.load(overrides=[
        "data.max_length=251", "data.val_fraction=0.05", f"train.max_steps={args.pretrain_steps}",
        "train.log_every_steps=25", f"run.output_dir={out}", "run.name=pretrain"])
    result = pretrain(cfg, show=False)
    return result.model_dir, result.results


def bench_usecase(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    from raycad.config import FinetuneConfig
    from raycad.data.batching import PaddingRule
    from raycad.data.loader import BUNDLED_DEMO
    from raycad.infer import ModelSpec, Predictor

    load_before = _load()
    model_dir, pre = _pretrain_export(args)
    pre_cfg, held = pre["config"], pre["final_held_out"]
    demo = pd.read_parquet(BUNDLED_DEMO)
    test = demo[demo.split == "test"]
    batches = args.finetune_epochs * -(-args.finetune_records // 32)
    runs: dict[str, list[dict[str, Any]]] = {"pre-trained": [], "random init": []}
    for seed in range(args.seeds):
        for kind, extra in (("pre-trained", [f"model.pretrained={model_dir}"]), ("random init", [])):
            cfg = FinetuneConfig.load(overrides=[*extra, f"train.seed={seed}", "train.batch_size=32"])
            start = time.perf_counter()
            model, _ = train_plain(cfg, batches, args.threads, records=args.finetune_records)
            spec = ModelSpec(("0", "1"), PaddingRule(251, "max_length"), conjoin=args.conjoin)
            with torch.inference_mode():
                out = Predictor.from_model(model, spec, device="cpu")({"sequence": test.sequence.to_numpy()})
            probs = np.stack([out["prob_0"], out["prob_1"]], axis=1)
            labels = test.label.to_numpy()
            runs[kind].append({"seed": seed, "test_accuracy": float((probs.argmax(1) == labels).mean()),
                               "test_auroc": float(roc_auc_score(labels, probs[:, 1])),
                               "wall_s": time.perf_counter() - start})
            print(kind, runs[kind][-1], flush=True)
    summary = {k: (statistics.mean(r["test_accuracy"] for r in v), statistics.stdev(r["test_accuracy"] for r in v))
               for k, v in runs.items()}
    res = {"pretrain": {"model_dir": str(model_dir), "steps": pre["steps"], "tokens": pre["tokens_trained"],
                        "wall_s": pre["timings"]["total_s"], **held},
           "runs": runs, "summary": summary, "load_before": load_before, "load_after": _load()}
    rows = "\n".join(
        f"| {kind} | " + " | ".join(f"{r['test_accuracy']:.4f}" for r in v)
        + f" | **{summary[kind][0]:.4f} ± {summary[kind][1]:.4f}** | "
        + f"{statistics.mean(r['test_auroc'] for r in v):.4f} |" for kind, v in runs.items())
    delta = summary["pre-trained"][0] - summary["random init"][0]
    md = (f"### Use case: pre-train on the training split, then fine-tune (3 seeds each)\n\n{DEMO_NOTE}\n\n"
          f"Pre-training: `raycad pretrain` with no URI = the bundled *training* split's 7,226 sequences without "
          f"labels (5% of the windows held out for the masked-LM metrics; no validation or test record is read), "
          f"preset `{pre_cfg['model']['preset']}` (random init), windows of 251, {pre['steps']} steps x batch "
          f"{pre_cfg['train']['batch_size']} = {pre['tokens_trained']:,} tokens, 2 CPU workers (Ray Train), "
          f"{pre['timings']['total_s'] / 60:.1f} min wall. Held-out masked-token loss {held.get('val_loss'):.3f}, "
          f"accuracy {held.get('val_accuracy'):.3f}, perplexity {held.get('val_perplexity'):.3f} (a uniform guess "
          f"over 4 bases: loss 1.386, perplexity 4).\n\n"
          f"Fine-tuning, the same small budget for both arms: the first {args.finetune_records:,} training records "
          f"(labels used only here), {batches} steps of batch 32 (~{args.finetune_epochs} epochs), the default "
          f"fine-tuning config otherwise (lr 3e-3, warmup + cosine, RC augmentation), run as a single-process "
          f"loop with raycad's model, optimizer and schedule (`train_plain` in bench/train.py) instead of Ray "
          f"Train: under this machine's load (1-minute load average {load_before} on 2 cores) each Ray Train "
          f"start took minutes. Test = the demo's 904 test records, "
          + ("both strands averaged (conjoined) as `raycad finetune` evaluates." if args.conjoin else
             "forward strand only (no conjoining, to save time).")
          + f" Seeds {', '.join(map(str, range(args.seeds)))} set the head / random init and the data order. Load average at the end: {res['load_after']}.\n\n"
          "| fine-tuned from | " + " | ".join(f"seed {s}" for s in range(args.seeds))
          + " | test accuracy mean ± sd | mean AUROC |\n|---|" + "---:|" * (args.seeds + 2) + "\n" + rows
          + f"\n\nPre-trained minus random init: **{delta:+.4f}** test accuracy (mean of {args.seeds} seeds).\n")
    return res, md


BENCHMARKS = {"throughput": bench_throughput, "usecase": bench_usecase}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (throughput)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating plain/Ray runs (throughput)")
    parser.add_argument("--models", nargs="+", choices=list(PRESETS), default=list(PRESETS),
                        help="models timed (throughput)")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="pre-training steps (usecase)")
    parser.add_argument("--finetune-records", type=int, default=1000, help="training records (usecase)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs (usecase)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (usecase)")
    parser.add_argument("--pretrained-run", metavar="DIR", help="reuse this pretrain run instead (usecase)")
    parser.add_argument("--no-conjoin", dest="conjoin", action="store_false",
                        help="score the test set on the forward strand only (usecase; default: both strands)")
    return run_benchmarks(parser, BENCHMARKS, "bench/pretrain.py", SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
