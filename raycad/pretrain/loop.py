"""The per-worker masked-LM pre-training loop run by Ray Train's `TorchTrainer`.

`pretrain_loop_per_worker(config)` receives ``{"cfg": PretrainConfig.to_dict(), "plan": step plan,
"cpus_per_worker"}`` (see `raycad.pretrain.recipe.step_plan`) and on every worker runs these steps:

1. `setup_mlm_worker`: builds `CaduceusForMaskedLM` (a preset's seeded random init, or ``model.pretrained``),
   wraps it for DDP, compiles the scan kernels, builds AdamW + warmup/cosine over the plan's ``total_steps``
   (the fine-tuning loop's pieces) and resumes from ``ray.train.get_checkpoint()``: weights, optimizer,
   scheduler, the step, the epoch and how many batches of that epoch were done; a mid-epoch checkpoint resumes
   mid-epoch (the batches already trained in that epoch are skipped, so every epoch still has its
   ``batches_per_epoch`` batches);
2. `train_epoch`: trains on its shard of windows, RC-augmented and masked by `MLMCollator` (seeded per window,
   epoch and rank), one `mlm_forward_backward` per micro-batch (the loss of `masked_lm_loss`, masked positions
   only; metrics accumulate without a host sync per step);
3. `report`: every ``train.log_every_steps`` steps the band's masked-token loss / accuracy / perplexity
   (all-reduced, `band_row`), with a checkpoint every ``train.checkpoint_every_steps`` steps;
4. at the end of every epoch, and when the step budget ends, `held_out_metrics` on the held-out windows
   (masked the same way at every evaluation), reported with a checkpoint.

Rank 0 returns the history (band and epoch rows) as ``Result.return_value``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from raycad.config import PretrainConfig
from raycad.pretrain.loss import MLMMetrics, masked_lm_loss
from raycad.pretrain.masking import IGNORE_INDEX, MLMCollator

EVAL_SALT = 0xE7A1


def build_mlm_model(cfg: PretrainConfig) -> torch.nn.Module:
    """`CaduceusForMaskedLM` as ``cfg.model`` says (random init of the preset, or a checkpoint to continue)."""
    from raycad.model import CaduceusForMaskedLM
    from raycad.train.build import build_base_model

    return build_base_model(CaduceusForMaskedLM, cfg)


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, batches: Any, device: torch.device, precision: str = "fp32") -> MLMMetrics:
    """This process's masked-token metrics of ``model`` over ``batches`` (not yet all-reduced)."""
    from raycad.train.loop import autocast_context

    was_training = model.training
    model.eval()
    metrics = MLMMetrics()
    for batch in batches:
        with autocast_context(device, precision):
            logits = model(input_ids=batch["input_ids"].to(device)).logits
        metrics.update(logits, batch["labels"].to(device))
    model.train(was_training)
    return metrics


@dataclass
class MLMWorker:
    """What one Ray Train worker holds while it pre-trains (built by `setup_mlm_worker`)."""

    cfg: PretrainConfig
    plan: dict[str, int]
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    state: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "step": 0, "batches_done": 0, "windows": 0,
                                                           "history": []})
    """Progress (checkpointed): optimizer steps, epochs done, batches done of this epoch, windows, history."""

    @property
    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]


@dataclass
class Band:
    """The training metrics of the optimizer steps since the last report, and how long they took.

    The clock starts at the band's first batch, so an epoch's data-pipeline start (``data_start_s``: from asking
    Ray Data for the epoch's batches to the first one) is reported beside the band's time, not inside it."""

    metrics: MLMMetrics = field(default_factory=MLMMetrics)
    windows: int = 0
    start: float | None = None
    data_start_s: float = 0.0

    def begin(self) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start if self.start is not None else 0.0


def setup_mlm_worker(config: dict[str, Any]) -> MLMWorker:
    """Model (DDP), optimizer, schedule and the resumed progress of this worker; compiles the scan kernels."""
    import ray.train.torch

    from raycad.model.scan import scan_path
    from raycad.train.loop import (
        _progress,
        build_optimizer,
        build_scheduler,
        grad_scaler,
        resume,
        setup_worker,
    )

    cfg = PretrainConfig.from_dict(config["cfg"], source="pretrain_loop_per_worker config")
    plan = config["plan"]
    rank, world, device = setup_worker(cfg, config.get("cpus_per_worker", 1))
    model = ray.train.torch.prepare_model(build_mlm_model(cfg))
    scan_path(device)  # the fused kernels compile (or load from cache) now, not inside the first band's time
    optimizer = build_optimizer(model, cfg)
    worker = MLMWorker(cfg, plan, rank, world, device, model, optimizer,
                       build_scheduler(optimizer, cfg, plan["total_steps"]), grad_scaler(device, cfg.train.precision))
    checkpoint = resume(worker.state, model=model, optimizer=optimizer, scheduler=worker.scheduler,
                        scaler=worker.scaler)
    if checkpoint and rank == 0:
        _progress(f"resumed from {checkpoint.path} at step {worker.state['step']} (epoch {worker.state['epoch'] + 1}"
                  f", {worker.state['batches_done']} of {plan['batches_per_epoch']} batches done)")
    return worker


def mlm_forward_backward(worker: MLMWorker, batch: dict[str, torch.Tensor], band: Band, sync: bool) -> None:
    """One micro-batch: forward, masked-LM loss, backward (DDP syncs only when ``sync``); its loss sum, correct
    predictions and target count go to ``band`` as tensors (no host sync per step)."""
    from raycad.train.loop import forward_backward

    cfg, device = worker.cfg, worker.device
    input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)

    def mlm_loss(input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = worker.model(input_ids=input_ids).logits
        total, targets = masked_lm_loss(logits, labels, reduction="sum"), (labels != IGNORE_INDEX).sum()
        return total / targets.clamp(min=1), (logits, total)

    _, (logits, total) = forward_backward(worker.model, mlm_loss, (input_ids, labels), sync=sync,
                                          accum=cfg.train.grad_accum, scaler=worker.scaler, device=device,
                                          precision=cfg.train.precision)
    band.metrics.update(logits.detach(), labels, loss_sum=total.detach())
    band.windows += input_ids.shape[0]


def train_epoch(worker: MLMWorker, shard: Any) -> Band:
    """The rest of this epoch on this worker's shard (batches trained before a resumed checkpoint are skipped),
    up to the step budget; reports a band every ``train.log_every_steps`` steps. Returns the last, unreported band."""
    from raycad.data import iter_batches
    from raycad.train.loop import _optimizer_step

    cfg, state, plan = worker.cfg, worker.state, worker.plan
    epoch, skip, per_epoch = state["epoch"], state["batches_done"], plan["batches_per_epoch"]
    collate = MLMCollator(cfg.mlm, rc_prob=cfg.data.rc_augment, salt=(cfg.train.seed, epoch, worker.rank))
    asked, band, micro = time.perf_counter(), Band(), 0
    worker.optimizer.zero_grad(set_to_none=True)
    batches = iter_batches(shard, cfg, "train", cfg.train.batch_size // worker.world, epoch,
                           seed_offset=worker.rank, device=worker.device, collate_fn=collate)
    for index, batch in enumerate(batches):
        if index < skip:  # trained before the checkpoint this run resumed from
            continue
        if index >= per_epoch or state["step"] >= plan["total_steps"]:
            break
        if micro == 0:
            band.data_start_s = time.perf_counter() - asked
        band.begin()
        micro += 1
        sync = micro % cfg.train.grad_accum == 0 or index + 1 == per_epoch
        mlm_forward_backward(worker, batch, band, sync)
        if not sync:
            continue
        _optimizer_step(worker.optimizer, worker.scheduler, worker.scaler, worker.trainable, cfg.train.grad_clip)
        state["step"], state["batches_done"] = state["step"] + 1, index + 1
        step, every = state["step"], cfg.train.checkpoint_every_steps
        if step % cfg.train.log_every_steps == 0 and index + 1 < per_epoch and step < plan["total_steps"]:
            report(worker, "band", band, checkpoint=bool(every and step % every == 0))
            band = Band(start=time.perf_counter())  # the next band's clock includes its wait for data
    return band


def held_out_metrics(worker: MLMWorker) -> dict[str, Any]:
    """Masked-token loss / accuracy / perplexity of the held-out windows (masked the same way every time),
    all-reduced over the workers."""
    import ray.train

    from raycad.data import iter_batches

    cfg = worker.cfg
    collate = MLMCollator(cfg.mlm, salt=(cfg.train.seed, EVAL_SALT))
    batches = iter_batches(ray.train.get_dataset_shard("validation"), cfg, "validation",
                           max(1, cfg.train.eval_batch_size // worker.world), 0, device=worker.device,
                           collate_fn=collate)
    metrics = evaluate_mlm(worker.model, batches, worker.device, cfg.train.precision)
    return metrics.all_reduce(worker.device).compute("val_")


def band_row(worker: MLMWorker, kind: str, band: Band, windows: int, elapsed: float) -> dict[str, Any]:
    """The history row of a reported band (``band.metrics`` already all-reduced; ``windows`` over all workers)."""
    state, max_length = worker.state, worker.cfg.data.max_length
    return {"kind": kind, "epoch": state["epoch"] + (kind != "epoch"), "step": state["step"],
            "lr": worker.scheduler.get_last_lr()[0], **band.metrics.compute("train_"), "windows": state["windows"],
            "tokens": state["windows"] * max_length,
            "tokens_per_s": windows * max_length / elapsed if elapsed > 0 else 0.0, "band_time_s": elapsed,
            "data_start_s": band.data_start_s}


def report(worker: MLMWorker, kind: str, band: Band, checkpoint: bool) -> None:
    """Report a band ("band"), an epoch's end ("epoch", with the held-out metrics) or the budget's end ("final")
    to Ray Train, with a resumable checkpoint when ``checkpoint``; rank 0 prints a progress line."""
    import ray.train

    from raycad.train.loop import _progress, all_reduce_sum, report_with_checkpoint

    elapsed = band.elapsed()
    band.metrics.all_reduce(worker.device)
    windows = int(all_reduce_sum([band.windows], worker.device)[0])
    worker.state["windows"] += windows
    row = band_row(worker, kind, band, windows, elapsed)
    if kind != "band":
        row.update(held_out_metrics(worker))
    worker.state["history"].append(row)
    if worker.rank == 0:
        _progress(progress_line(row, worker.plan["total_steps"]))
    metrics = {k: v for k, v in row.items() if k != "kind"}
    if checkpoint:
        report_with_checkpoint(metrics, f"step_{worker.state['step']:08d}", rank=worker.rank, model=worker.model,
                               optimizer=worker.optimizer, scheduler=worker.scheduler, scaler=worker.scaler,
                               state={**worker.state, "config": worker.cfg.to_dict(), "plan": worker.plan})
    else:
        ray.train.report(metrics)


def progress_line(row: dict[str, Any], total_steps: int) -> str:
    line = (f"step {row['step']}/{total_steps}  epoch {row['epoch']}  masked loss {row['train_loss']:.4f}  "
            f"acc {row['train_accuracy']:.4f}  {row['tokens_per_s']:.0f} tok/s")
    if "val_loss" in row:
        line += f"  | held-out loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.4f}  ppl {row['val_perplexity']:.3f}"
    return line


def pretrain_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point (see the module docstring)."""
    import ray.train

    worker = setup_mlm_worker(config)
    state, plan = worker.state, worker.plan
    shard = ray.train.get_dataset_shard("train")
    worker.model.train()
    while state["step"] < plan["total_steps"]:
        band = train_epoch(worker, shard)
        if state["step"] < plan["total_steps"] or state["batches_done"] >= plan["batches_per_epoch"]:
            state["epoch"], state["batches_done"] = state["epoch"] + 1, 0  # the epoch's data is done
            report(worker, "epoch", band, checkpoint=True)
        else:  # the step budget ended inside the epoch
            report(worker, "final", band, checkpoint=True)
    if worker.rank == 0:
        return {k: state[k] for k in ("history", "step", "epoch", "windows")}
    return None
