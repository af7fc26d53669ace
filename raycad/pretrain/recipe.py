"""The pre-training recipe: the whole ``raycad pretrain`` job, built from reusable components.

Components: windowing (`raycad.pretrain.windows`, a Ray Data transform), masking (`raycad.pretrain.masking`)
and the loss (`raycad.pretrain.loss`); the worker loop (`raycad.pretrain.loop`); and, shared with
fine-tuning, the model builder, optimizer / schedule, checkpoints, `TorchTrainer` construction and reports
of `raycad.train`.

`pretrain(cfg)`: windows the sources (one counting pass), plans the step budget (`step_plan`), fits a Ray
Train `TorchTrainer` (DDP, CPU or GPU; `FailureConfig`; re-running a run name resumes it from its latest
checkpoint, mid-epoch included), then exports the final `CaduceusForMaskedLM` as a Hugging Face-style
directory (``config.json``, ``model.safetensors`` in the released layout, the tokenizer, ``raycad.json``)
that ``raycad finetune --set model.pretrained=DIR`` and ``CaduceusForSequenceClassification.from_pretrained``
load, and writes ``results.json``, ``metrics.csv`` (band and epoch rows) and ``learning_curve.png``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raycad.config import ConfigError, PretrainConfig
from raycad.runtime import console, get_logger

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer

    from raycad.pretrain.data import PretrainData

log = get_logger("raycad.pretrain")

CSV_COLUMNS = ("kind", "epoch", "step", "lr", "train_loss", "train_accuracy", "train_perplexity",
               "train_masked_tokens", "val_loss", "val_accuracy", "val_perplexity", "val_masked_tokens",
               "windows", "tokens", "tokens_per_s", "band_time_s", "data_start_s")


@dataclass
class PretrainResult:
    """What `pretrain` produced: the history, the final held-out metrics and where everything went."""

    run_dir: Path
    history: list[dict[str, Any]]
    final_metrics: dict[str, Any]
    checkpoint: str | None
    model_dir: Path | None
    results: dict[str, Any] = field(repr=False, default_factory=dict)


def step_plan(cfg: PretrainConfig, num_train: int) -> dict[str, int]:
    """Batches per epoch (per worker) and optimizer steps: ``train.epochs`` over the training windows, or, when
    set, the smaller of ``train.max_steps`` and ``train.max_tokens`` (windows x max_length per step)."""
    from raycad.train.loop import steps_per_epoch

    world = cfg.scaling.num_workers
    per_worker = cfg.train.batch_size // world
    batches = math.ceil((num_train // world) / per_worker)
    epoch_steps = steps_per_epoch(num_train, world, per_worker, cfg.train.grad_accum)
    budgets = []  # a step or token budget replaces the epochs (as many epochs as it takes)
    if cfg.train.max_steps:
        budgets.append(cfg.train.max_steps)
    if cfg.train.max_tokens:
        tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.data.max_length
        budgets.append(math.ceil(cfg.train.max_tokens / tokens_per_step))
    total = min(budgets) if budgets else epoch_steps * cfg.train.epochs
    if batches < 1:
        raise ConfigError(f"{num_train} training windows give no batch for {world} workers")
    return {"batches_per_epoch": batches, "steps_per_epoch": epoch_steps, "total_steps": max(1, total),
            "epochs": math.ceil(total / epoch_steps)}


def default_run_name(cfg: PretrainConfig) -> str:
    base = Path(cfg.data.train[0].rstrip("/")).name.split(".")[0] if cfg.data.train else "demo"
    return f"pretrain-{base or 'data'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_pretrain_trainer(cfg: PretrainConfig, data: PretrainData, *, name: str, plan: dict[str, int],
                           storage_path: str | None = None, train_loop: Any = None) -> TorchTrainer:
    """The `TorchTrainer` of a pre-training run (``train_loop`` replaces the loop, e.g. to inject failures)."""
    from raycad.pretrain.loop import pretrain_loop_per_worker
    from raycad.train.trainer import make_torch_trainer

    return make_torch_trainer(cfg, train_loop or pretrain_loop_per_worker, {"plan": plan}, data.datasets,
                              name=name, storage_path=storage_path)


def load_pretrain_checkpoint(checkpoint: Any) -> tuple[Any, dict[str, Any]]:
    """The `CaduceusForMaskedLM` of a pre-training checkpoint (eval mode, CPU) and its ``state.json``."""
    from raycad.pretrain.loop import build_mlm_model
    from raycad.train.checkpoint import STATE_NAME, load_trainable_weights, read_state

    if hasattr(checkpoint, "as_directory"):
        with checkpoint.as_directory() as directory:
            return load_pretrain_checkpoint(directory)
    state = read_state(checkpoint)
    cfg = PretrainConfig.from_dict(state["config"], source=str(Path(checkpoint) / STATE_NAME))
    model = build_mlm_model(cfg)
    load_trainable_weights(model, checkpoint, state.get("frozen_checksum"))
    return model.eval(), state


@dataclass
class PreparedRun:
    """A pre-training run ready to fit: its config (run name set), directory, windowed data and step plan."""

    cfg: PretrainConfig
    run_dir: Path
    data: PretrainData
    plan: dict[str, int]
    cached: bool


def prepare_run(cfg: PretrainConfig) -> PreparedRun:
    """Name the run (a changed config of an existing run is refused, as for fine-tuning), start Ray, window the
    sources (one counting pass), keep small data in memory and plan the step budget."""
    from raycad.pretrain.data import MATERIALIZE_MAX_TOKENS, prepare_pretrain_data
    from raycad.train.trainer import cache_small_data, resolve_resume, start_run

    # A changed config never resumes silently (the fine-tuning rule; the CLI's --continue-stored / --fresh).
    cfg = resolve_resume(cfg.with_overrides({"run.name": cfg.run.name or default_run_name(cfg)}))
    cfg, _, run_dir = start_run(cfg, cfg.run.name)
    data = prepare_pretrain_data(cfg)
    counts = data.counts["train"]
    log.info("data: %s records, %s bases -> %s windows of %d (stride %d); %s mostly-N dropped; %s train, %s "
             "held out", f"{counts['records']:,}", f"{counts['bases']:,}", f"{counts['windows']:,}",
             cfg.data.max_length, cfg.data.stride or cfg.data.max_length, f"{counts['mostly_n']:,}",
             f"{data.num_train:,}", f"{data.num_validation:,}")
    cached = cache_small_data(data, cfg, data.num_train + data.num_validation,
                              max_records=MATERIALIZE_MAX_TOKENS // cfg.data.max_length)
    plan = step_plan(cfg, data.num_train)
    log.info("plan: %d optimizer steps (%d per epoch, global batch %d windows = %s tokens)", plan["total_steps"],
             plan["steps_per_epoch"], cfg.train.batch_size, f"{cfg.train.batch_size * cfg.data.max_length:,}")
    return PreparedRun(cfg, run_dir, data, plan, cached)


def fit(run: PreparedRun) -> Any:
    """Fit the run's `TorchTrainer`; the `ray.train.Result` (its error raised; a checkpoint is required)."""
    result = build_pretrain_trainer(run.cfg, run.data, name=run.cfg.run.name, plan=run.plan).fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("pre-training finished without reporting a checkpoint")
    return result


def export_pretrained(model: Any, state: dict[str, Any], final: dict[str, Any], cfg: PretrainConfig,
                      run_dir: Path) -> Path:
    """``<run_dir>/model``: the Hugging Face-style export that fine-tuning and ``from_pretrained`` load."""
    from raycad.train.checkpoint import export_model

    meta = {"objective": "masked-lm", "max_length": cfg.data.max_length, "steps": state["step"],
            "tokens": state["windows"] * cfg.data.max_length,
            "held_out": {k: final.get(k) for k in ("val_loss", "val_accuracy", "val_perplexity")},
            "config": cfg.to_dict()}
    return export_model(model, run_dir / "model", meta=meta)


def run_results(run: PreparedRun, result: Any, state: dict[str, Any], history: list[dict[str, Any]],
                final: dict[str, Any], model: Any, model_dir: Path | None,
                timings: dict[str, float]) -> dict[str, Any]:
    """``results.json`` of a finished run: data report, plan, progress, final held-out metrics, speed."""
    cfg, windows = run.cfg, state["windows"]
    train_time = sum(h["band_time_s"] for h in history if h.get("band_time_s"))
    return {
        "run": cfg.run.name, "config": cfg.to_dict(), "data": run.data.report(), "plan": run.plan,
        "cached_in_memory": run.cached, "steps": state["step"], "epochs_completed": state["epoch"],
        "windows_trained": windows, "tokens_trained": windows * cfg.data.max_length, "final_held_out": final,
        "history": history, "parameters": sum(p.numel() for p in model.parameters()),
        "timings": {**timings, "train_s": train_time},
        "tokens_per_s": windows * cfg.data.max_length / train_time if train_time else None,
        "scaling": {"num_workers": cfg.scaling.num_workers, "use_gpu": cfg.scaling.use_gpu},
        "checkpoint": result.checkpoint.path, "ray_run_path": result.path,
        "model_dir": str(model_dir) if model_dir else None,
    }


def pretrain(cfg: PretrainConfig, *, show: bool = True) -> PretrainResult:
    """Pre-train as configured; everything goes to ``<run.output_dir>/<run.name>`` (see the module docstring)."""
    from raycad.storage import publish_run
    from raycad.train import report

    t0 = time.perf_counter()
    run = prepare_run(cfg)
    t_fit = time.perf_counter()
    result = fit(run)
    fit_time = time.perf_counter() - t_fit
    model, state = load_pretrain_checkpoint(result.checkpoint)
    history = (result.return_value or {}).get("history") or state["history"]
    final = next((h for h in reversed(history) if "val_loss" in h), {})
    model_dir = export_pretrained(model, state, final, run.cfg, run.run_dir) if run.cfg.run.export_model else None
    results = run_results(run, result, state, history, final, model, model_dir,
                          {"total_s": time.perf_counter() - t0, "fit_s": fit_time})
    report.write_results(run.run_dir, results)
    report.write_metrics_csv(run.run_dir / "metrics.csv", history, columns=CSV_COLUMNS)
    plot_curve(run.run_dir / "learning_curve.png", history)
    publish_run(run.cfg, run.run_dir)
    if show:
        console.print(results_table(results))
        console.print(f"results: {run.run_dir / 'results.json'}" + (f"   model: {model_dir}" if model_dir else ""))
    return PretrainResult(run_dir=run.run_dir, history=history, final_metrics=final,
                          checkpoint=result.checkpoint.path, model_dir=model_dir, results=results)


def plot_curve(path: str | os.PathLike, history: list[dict[str, Any]]) -> Path:
    """Masked-token loss and accuracy against optimizer steps: training bands and held-out evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = [h for h in history if "val_loss" in h]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "loss", "masked-token loss"), (axes[1], "accuracy", "masked-token accuracy")):
        ax.plot([h["step"] for h in history], [h[f"train_{key}"] for h in history], "o-", ms=3, label="train (band)")
        ax.plot([h["step"] for h in held], [h[f"val_{key}"] for h in held], "s-", label="held out")
        ax.set(xlabel="optimizer step", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_table(results: dict[str, Any]) -> Any:
    """The end-of-run summary as a rich table."""
    from rich.table import Table

    from raycad.train.report import fmt

    final = results["final_held_out"]
    counts = results["data"]["counts"]["train"]
    table = Table(title=f"raycad pretrain: {results['run']}")
    table.add_column("")
    table.add_column("value", justify="right")
    for key in ("loss", "accuracy", "perplexity"):
        table.add_row(f"held-out masked-token {key}", fmt(final.get(f"val_{key}")))
    table.add_section()
    table.add_row("steps / epochs completed", f"{results['steps']} / {results['epochs_completed']}")
    table.add_row("tokens trained", f"{results['tokens_trained']:,}")
    table.add_row("windows: train / held out / mostly-N dropped",
                  f"{results['data']['train_windows']:,} / {results['data']['validation_windows']:,} / "
                  f"{counts['mostly_n']:,}")
    table.add_row("parameters", f"{results['parameters']:,}")
    table.add_row("tokens/s (training)", f"{results.get('tokens_per_s') or 0:,.0f}")
    table.add_row("wall time", f"{results['timings']['total_s']:.0f} s")
    return table
