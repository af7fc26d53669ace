"""The per-worker masked-LM pre-training loop run by Ray Train's `TorchTrainer`.

`pretrain_loop_per_worker(config)` receives ``{"cfg": PretrainConfig.to_dict(), "plan": step plan,
"cpus_per_worker"}`` (see `raycad.pretrain.recipe.step_plan`) and on every worker:

1. builds `CaduceusForMaskedLM` (a preset's seeded random init, or ``model.pretrained``), wraps it for DDP,
   and builds AdamW + warmup/cosine over the plan's ``total_steps`` (the fine-tuning loop's pieces);
2. resumes from ``ray.train.get_checkpoint()``: weights, optimizer, scheduler, the step, the epoch and how
   many batches of that epoch were done; a mid-epoch checkpoint resumes mid-epoch (the batches already
   trained in that epoch are skipped, so every epoch still has its ``batches_per_epoch`` batches);
3. trains on its shard of windows, RC-augmented and masked by `MLMCollator` (seeded per window, epoch and
   rank), with the loss of `masked_lm_loss` (masked positions only);
4. every ``train.log_every_steps`` steps reports the band's masked-token loss / accuracy / perplexity
   (all-reduced), with a checkpoint every ``train.checkpoint_every_steps`` steps;
5. at the end of every epoch, and when the step budget ends, evaluates the held-out windows (masked the
   same way at every evaluation) and reports with a checkpoint.

Rank 0 returns the history (band and epoch rows) as ``Result.return_value``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from raycad.config import PretrainConfig
from raycad.pretrain.loss import MLMMetrics, masked_lm_loss
from raycad.pretrain.masking import MLMCollator

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


def pretrain_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point (see the module docstring)."""
    import ray.train
    import ray.train.torch

    from raycad.data import iter_batches
    from raycad.train.loop import (
        _optimizer_step,
        _progress,
        build_optimizer,
        build_scheduler,
        forward_backward,
        grad_scaler,
        report_with_checkpoint,
        resume,
        setup_worker,
    )

    cfg = PretrainConfig.from_dict(config["cfg"], source="pretrain_loop_per_worker config")
    plan = config["plan"]
    rank, world, device = setup_worker(cfg, config.get("cpus_per_worker", 1))
    model = ray.train.torch.prepare_model(build_mlm_model(cfg))
    per_worker_batch = cfg.train.batch_size // world
    eval_batch = max(1, cfg.train.eval_batch_size // world)
    accum, total_steps, batches_per_epoch = cfg.train.grad_accum, plan["total_steps"], plan["batches_per_epoch"]
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    scaler = grad_scaler(device, cfg.train.precision)
    trainable = [p for p in model.parameters() if p.requires_grad]

    state: dict[str, Any] = {"epoch": 0, "step": 0, "batches_done": 0, "windows": 0, "history": []}
    checkpoint = resume(state, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
    if checkpoint and rank == 0:
        _progress(f"resumed from {checkpoint.path} at step {state['step']} (epoch {state['epoch'] + 1}, "
                  f"{state['batches_done']} of {batches_per_epoch} batches done)")

    def mlm_loss(input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=input_ids).logits
        return masked_lm_loss(logits, labels), logits

    def held_out_metrics() -> dict[str, Any]:
        collate = MLMCollator(cfg.mlm, salt=(cfg.train.seed, EVAL_SALT))
        batches = iter_batches(ray.train.get_dataset_shard("validation"), cfg, "validation", eval_batch, 0,
                               device=device, collate_fn=collate)
        return evaluate_mlm(model, batches, device, cfg.train.precision).all_reduce(device).compute("val_")

    def report(kind: str, band: MLMMetrics, band_start: float, band_windows: int, checkpoint: bool) -> None:
        band.all_reduce(device)
        windows = all_reduce_windows(band_windows)
        state["windows"] += windows
        elapsed = time.perf_counter() - band_start
        row: dict[str, Any] = {
            "kind": kind, "epoch": state["epoch"] + (kind != "epoch"), "step": state["step"],
            "lr": scheduler.get_last_lr()[0], **band.compute("train_"), "windows": state["windows"],
            "tokens": state["windows"] * cfg.data.max_length,
            "tokens_per_s": windows * cfg.data.max_length / elapsed if elapsed > 0 else 0.0,
            "band_time_s": elapsed}
        if kind != "band":
            row.update(held_out_metrics())
        state["history"].append(row)
        if rank == 0:
            line = (f"step {state['step']}/{total_steps}  epoch {row['epoch']}  masked loss "
                    f"{row['train_loss']:.4f}  acc {row['train_accuracy']:.4f}  {row['tokens_per_s']:.0f} tok/s")
            if "val_loss" in row:
                line += (f"  | held-out loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.4f}  "
                         f"ppl {row['val_perplexity']:.3f}")
            _progress(line)
        metrics = {k: v for k, v in row.items() if k != "kind"}
        if checkpoint:
            report_with_checkpoint(metrics, f"step_{state['step']:08d}", rank=rank, model=model,
                                   optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                   state={**state, "config": cfg.to_dict(), "plan": plan})
        else:
            ray.train.report(metrics)

    def all_reduce_windows(count: int) -> int:
        from raycad.train.loop import all_reduce_sum

        return int(all_reduce_sum([count], device)[0])

    train_shard = ray.train.get_dataset_shard("train")
    model.train()
    while state["step"] < total_steps:
        epoch, skip = state["epoch"], state["batches_done"]
        collate = MLMCollator(cfg.mlm, rc_prob=cfg.data.rc_augment, salt=(cfg.train.seed, epoch, rank))
        band, band_start, band_windows, micro = MLMMetrics(), time.perf_counter(), 0, 0
        optimizer.zero_grad(set_to_none=True)
        batches = iter_batches(train_shard, cfg, "train", per_worker_batch, epoch, seed_offset=rank, device=device,
                               collate_fn=collate)
        for index, batch in enumerate(batches):
            if index < skip:  # trained before the checkpoint this run resumed from
                continue
            if index >= batches_per_epoch or state["step"] >= total_steps:
                break
            micro += 1
            sync = micro % accum == 0 or index + 1 == batches_per_epoch
            input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            _, logits = forward_backward(model, mlm_loss, (input_ids, labels), sync=sync, accum=accum,
                                         scaler=scaler, device=device, precision=cfg.train.precision)
            band.update(logits.detach(), labels)
            band_windows += input_ids.shape[0]
            if not sync:
                continue
            _optimizer_step(optimizer, scheduler, scaler, trainable, cfg.train.grad_clip)
            state["step"] += 1
            state["batches_done"] = index + 1
            step = state["step"]
            end_of_epoch = index + 1 == batches_per_epoch
            if step % cfg.train.log_every_steps == 0 and not end_of_epoch and step < total_steps:
                every = cfg.train.checkpoint_every_steps
                report("band", band, band_start, band_windows, checkpoint=bool(every and step % every == 0))
                band, band_start, band_windows = MLMMetrics(), time.perf_counter(), 0
        if state["step"] < total_steps or state["batches_done"] >= batches_per_epoch:  # the epoch's data is done
            state["epoch"] += 1
            state["batches_done"] = 0
            report("epoch", band, band_start, band_windows, checkpoint=True)
        else:  # the step budget ended inside the epoch
            report("final", band, band_start, band_windows, checkpoint=True)
    if rank == 0:
        return {k: state[k] for k in ("history", "step", "epoch", "windows")}
    return None
