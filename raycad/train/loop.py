"""The per-worker training function run by Ray Train's `TorchTrainer`, and the pieces it is made of.

`train_loop_per_worker(config)` is `setup`, then per epoch `train_epoch`, `validate`, `end_epoch` and
`report`; each works alone (`make_worker` builds a `Worker` without Ray). It receives ``{"cfg":
FinetuneConfig.to_dict(), "num_classes", "class_names", "max_length", "num_train", "cpus_per_worker",
"train_batch_rows"}`` (the last is set when the training data is length-bucketed: one row per global batch,
read by every worker) and, on every worker:

1. sets torch threads to the worker's CPUs, builds the model (seeded, identical on every rank), applies LoRA,
   wraps it for DDP with ``ray.train.torch.prepare_model``;
2. builds AdamW (no weight decay on biases/norms/1-d tensors) and a warmup + cosine schedule;
3. resumes from ``ray.train.get_checkpoint()`` when Ray restarts the run (after a failure or a re-run of the
   same run name): weights, optimizer, scheduler, history and early-stopping state continue from the last
   completed epoch, so no epoch is lost or repeated;
4. per epoch: trains on its shard (``get_dataset_shard("train")`` through `raycad.data.iter_batches`, the
   global batch split evenly across workers, gradient accumulation, clipping, bf16/fp16 autocast on GPU;
   with ``train.weight_average`` a moving average of the weights follows every step), evaluates on its
   validation shard (the averaged weights, if any), combines the workers' metric state (counts summed,
   probabilities gathered for an exact AUROC; identical metrics on every rank), and calls
   ``ray.train.report`` with a checkpoint written by rank 0 only;
5. stops early when ``cfg.train.early_stopping_metric`` has not improved for ``cfg.train.patience`` epochs.

Rank 0 returns the per-epoch history (`Result.return_value`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from raycad.config import FinetuneConfig
from raycad.train.ema import WeightAverage
from raycad.train.metrics import EvalAccumulator

EPOCH_METRICS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_f1", "val_mcc", "val_auroc")


# ---- optimisation pieces --------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on matrices (not biases, norms, A_log, D)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and not name.endswith(("A_log", ".D")) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                             eps=cfg.optim.eps)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float, name: str = "cosine") -> float:
    """Multiplier of the base LR after ``step`` optimizer steps: linear warmup, then cosine to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: FinetuneConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = round(cfg.schedule.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.schedule.min_lr_ratio, cfg.schedule.name))


def steps_per_epoch(num_train: int, num_workers: int, per_worker_batch: int, grad_accum: int) -> int:
    """Optimizer steps per epoch when each worker gets ``num_train // num_workers`` rows (equal split)."""
    batches = math.ceil((num_train // num_workers) / per_worker_batch)
    return max(1, math.ceil(batches / grad_accum))


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on GPU; CPU (and fp32) runs in full precision."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 on GPU; None otherwise (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if device.type == "cuda" and precision == "fp16" else None


def forward_backward(model: nn.Module, forward: Callable[..., tuple[torch.Tensor, Any]], inputs: tuple, *,
                     sync: bool, accum: int, scaler: Any, device: torch.device,
                     precision: str) -> tuple[torch.Tensor, Any]:
    """One micro-batch: ``forward(*inputs)`` -> ``(loss, extra)`` under autocast, then backward of ``loss / accum``.

    DDP all-reduces gradients only when ``sync`` (the last micro-batch of an optimizer step). Returns what
    ``forward`` returned.
    """
    no_sync = model.no_sync() if (not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
    with no_sync:
        with autocast_context(device, precision):
            loss, extra = forward(*inputs)
        scaled = loss / accum
        (scaler.scale(scaled) if scaler else scaled).backward()
    return loss, extra


# ---- evaluation ------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], num_classes: int,
                     device: torch.device, precision: str = "fp32") -> EvalAccumulator:
    """Run ``model`` over ``batches`` and accumulate this process's metric counts (not yet all-reduced). On CPU
    each batch runs in calls of at most `raycad.data.batching.cpu_tokens_per_call` tokens (as inference does)."""
    from raycad.data.batching import cpu_tokens_per_call, rows_per_call
    from raycad.train.checkpoint import unwrap

    was_training = model.training
    model.eval()
    acc = EvalAccumulator(num_classes)
    config = getattr(unwrap(model), "config", None)
    max_tokens = cpu_tokens_per_call(config, getattr(config, "conjoin_eval", False)) if device.type == "cpu" else None
    for batch in batches:
        ids, all_labels = batch["input_ids"], batch["labels"]
        rows = rows_per_call(ids.shape[1], len(ids), max_tokens)
        for start in range(0, len(ids), rows):
            labels = all_labels[start:start + rows].to(device)
            with autocast_context(device, precision):
                logits = model(input_ids=ids[start:start + rows].to(device)).logits
            logits = logits.float()
            acc.update(logits, labels, torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
    model.train(was_training)
    return acc


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    return _all_reduce(torch.tensor(values, dtype=torch.float64), device).tolist()


def same_on_every_rank(value: int, device: torch.device) -> bool:
    """Whether every DDP rank passed the same integer (|value| < 2^63; one all-reduce of two int64)."""
    largest, smallest = _all_reduce(torch.tensor([value, -value], dtype=torch.int64), device, "max").tolist()
    return largest == -smallest


def _all_reduce(tensor: torch.Tensor, device: torch.device, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over the DDP ranks (itself when not distributed), on the CPU."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_backend() == "nccl":
            tensor = tensor.to(device)
        reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.cpu()


# ---- worker plumbing shared by the fine-tuning and pre-training loops ----------------------------------------


def setup_worker(cfg: Any, cpus_per_worker: float) -> tuple[int, int, torch.device]:
    """Torch threads = the worker's CPUs (or ``cfg.train.torch_threads``); returns (rank, world size, device)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.train.torch_threads or max(1, round(cpus_per_worker)))
    device = ray.train.torch.get_device()
    if device.type != "cuda" and cfg.train.precision != "fp32" and rank == 0:
        _progress(f"train.precision={cfg.train.precision} applies on GPU only; training in fp32 on {device}")
    return rank, world, device


def resume(state: dict[str, Any], **training: Any) -> Any:
    """Restore ``training`` (model, optimizer, scheduler, scaler) and the keys of ``state`` from the run's
    latest checkpoint when Ray Train restarts the run; returns that `ray.train.Checkpoint`, or None."""
    import ray.train

    from raycad.train.checkpoint import load_training_state

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            saved = load_training_state(directory, **training)
        state.update({k: saved[k] for k in state})
    return checkpoint


def report_with_checkpoint(metrics: dict[str, Any], dir_name: str, *, rank: int, model: nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                           state: dict[str, Any], average: Any = None) -> None:
    """``ray.train.report`` on every rank, with a resumable checkpoint written by rank 0 only."""
    import ray.train

    from raycad.train.checkpoint import save_training_checkpoint

    with tempfile.TemporaryDirectory(prefix="raycad-ckpt-") as tmp:
        ckpt = None
        if rank == 0:
            save_training_checkpoint(tmp, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                     state=state, average=average)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=dir_name)


# ---- the worker function ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    """How far the run has come; saved in every checkpoint's state.json and restored on resume."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False


@dataclass
class Worker:
    """One worker's training state: built by `setup` (or `make_worker`), used by `train_epoch`, `validate`
    and `report`."""

    cfg: FinetuneConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    device: torch.device
    num_classes: int
    rows_per_batch: int
    """Rows per per-worker batch: the batch size, or 1 when each row of bucketed data is a batch."""
    batches_per_epoch: int
    rank: int = 0
    world: int = 1
    bucketed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    """Saved beside the progress in every checkpoint: class_names, max_length."""
    shuffle_rows: int | None = None
    """Rows of the training shuffle buffer (`raycad.data.loader.shuffle_buffer_rows`); None = the loader's."""
    progress: Progress = field(default_factory=Progress)
    average: WeightAverage | None = None
    """The moving average of the weights (``train.weight_average``) that validation and checkpoints use."""

    @functools.cached_property
    def trainable(self) -> list[torch.Tensor]:
        """The parameters the optimizer updates (fixed once the model is built: LoRA or full fine-tuning)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def step(self) -> None:
        """One optimizer step (clipping, LR schedule), then the weight average follows."""
        _optimizer_step(self.optimizer, self.scheduler, self.scaler, self.trainable, self.cfg.train.grad_clip)
        self.progress.step += 1
        if self.average is not None:
            self.average.update(self.model)

    def evaluated(self) -> contextlib.AbstractContextManager:
        """The weights to evaluate inside the block: the moving average when there is one."""
        return self.average.applied(self.model) if self.average is not None else contextlib.nullcontext()


def make_worker(cfg: FinetuneConfig, model: nn.Module, *, num_classes: int, num_rows: int, device: torch.device,
                rank: int = 0, world: int = 1, bucketed: bool = False,
                meta: dict[str, Any] | None = None) -> Worker:
    """A `Worker` around ``model`` (already on ``device``): optimizer, LR schedule over every epoch's steps,
    loss scaler, training shuffle buffer. ``num_rows`` rows of training data are split over ``world``
    workers."""
    from raycad.data.loader import shuffle_buffer_rows

    per_worker = cfg.train.batch_size // world
    # bucketed: every rank reads all ``num_rows`` global batches (`raycad.data.loader.iter_global_batches`)
    rows_per_batch, split = (1, 1) if bucketed else (per_worker, world)
    shard_rows = num_rows // split
    max_length = (meta or {}).get("max_length") or cfg.data.max_length
    row_tokens = max_length * (per_worker * world if bucketed else 1) if max_length else None
    epoch_steps = steps_per_epoch(num_rows, split, rows_per_batch, cfg.train.grad_accum)
    optimizer = build_optimizer(model, cfg)
    average = WeightAverage(model, cfg.train.weight_average) if cfg.train.weight_average else None
    return Worker(cfg=cfg, model=model, optimizer=optimizer, average=average,
                  scheduler=build_scheduler(optimizer, cfg, epoch_steps * cfg.train.epochs),
                  scaler=grad_scaler(device, cfg.train.precision), device=device, num_classes=num_classes,
                  rows_per_batch=rows_per_batch, batches_per_epoch=math.ceil(shard_rows / rows_per_batch),
                  rank=rank, world=world, bucketed=bucketed, meta=dict(meta or {}),
                  shuffle_rows=shuffle_buffer_rows(shard_rows, row_tokens, rows_per_batch) if row_tokens else None)


def setup(config: dict[str, Any]) -> Worker:
    """Threads, the model (seeded, identical on every rank; LoRA applied) wrapped for DDP, optimizer and
    schedule, and the progress of the run's latest checkpoint when Ray Train restarts it."""
    import ray.train.torch

    from raycad.train.build import build_model

    cfg = FinetuneConfig.from_dict(config["cfg"], source="train_loop_per_worker config")
    rank, world, device = setup_worker(cfg, config.get("cpus_per_worker", 1))
    model = ray.train.torch.prepare_model(build_model(cfg, config["num_classes"], config.get("class_names")))
    # Length-bucketed training data has one row per per-worker batch (`raycad.data.batching.bucket_dataset`).
    bucket_rows = config.get("train_batch_rows")
    worker = make_worker(cfg, model, num_classes=config["num_classes"], num_rows=bucket_rows or config["num_train"],
                         device=device, rank=rank, world=world, bucketed=bool(bucket_rows),
                         meta={"class_names": config.get("class_names"), "max_length": config.get("max_length")})
    state = asdict(worker.progress)
    checkpoint = resume(state, model=model, optimizer=worker.optimizer, scheduler=worker.scheduler,
                        scaler=worker.scaler, average=worker.average)
    worker.progress = Progress(**state)
    if checkpoint and rank == 0:
        _progress(f"resumed from {checkpoint.path} after epoch {worker.progress.epoch}")
    return worker


def train_epoch(w: Worker, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """One epoch over this worker's ``batches`` (gradient accumulation, clipping, autocast); returns the
    training metrics summed over all workers: ``train_loss``, ``train_samples``, ``train_time_s``."""
    cfg, progress, accum = w.cfg, w.progress, w.cfg.train.grad_accum
    report_every = max(1, w.batches_per_epoch // 4)  # progress lines per epoch

    def classification_loss(input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, None]:
        return w.model(input_ids=input_ids, labels=labels).loss, None

    start = time.perf_counter()
    loss_sum, seen, micro = 0.0, 0, 0
    w.optimizer.zero_grad(set_to_none=True)
    for batch in batches:
        if "global_batch" in batch and w.world > 1 and not same_on_every_rank(batch["global_batch"], w.device):
            raise RuntimeError(f"rank {w.rank} is not on the same length-bucketed batch as the other ranks at batch "
                               f"{micro + 1}: the training data was not read in the same order on every worker")
        input_ids, labels = batch["input_ids"].to(w.device), batch["labels"].to(w.device)
        micro += 1
        sync = micro % accum == 0
        loss, _ = forward_backward(w.model, classification_loss, (input_ids, labels), sync=sync, accum=accum,
                                   scaler=w.scaler, device=w.device, precision=cfg.train.precision)
        loss_sum += float(loss.detach()) * labels.shape[0]
        seen += labels.shape[0]
        if sync:
            w.step()
        if w.rank == 0 and micro % report_every == 0 and micro < w.batches_per_epoch:
            elapsed = time.perf_counter() - start
            eta = _eta(elapsed, micro, w.batches_per_epoch, cfg.train.epochs - progress.epoch - 1)
            _progress(f"epoch {progress.epoch + 1}/{cfg.train.epochs}  {100 * micro // w.batches_per_epoch:3d}%  "
                      f"loss {loss_sum / max(seen, 1):.4f}  {w.world * seen / elapsed:.1f} seq/s  ETA {eta}")
    if micro % accum:  # an incomplete accumulation at the end of the epoch still gets applied
        w.step()
    train_time = time.perf_counter() - start
    total_loss, total_seen = all_reduce_sum([loss_sum, seen], w.device)
    return {"train_loss": total_loss / max(total_seen, 1), "train_samples": int(total_seen),
            "train_time_s": train_time,
            "train_sequences_per_s": total_seen / train_time if train_time > 0 else 0.0}


def validate(w: Worker, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Validation metrics (``val_*``) of this worker's ``batches`` combined over all workers (counts summed,
    probabilities gathered for an exact AUROC: identical on every rank), plus ``val_per_class``; with the
    averaged weights when the run averages them."""
    with w.evaluated():
        val = evaluate_batches(w.model, batches, w.num_classes, w.device, w.cfg.train.precision).all_reduce()
    val_metrics = val.compute(prefix="val_")
    return {**{k: v for k, v in val_metrics.items() if not isinstance(v, list)},
            "val_per_class": {k: val_metrics[f"val_{k}"] for k in ("support", "predicted", "true_positives")}}


def end_epoch(w: Worker, train: dict[str, Any], val: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The epoch's reported metrics; advances the progress and the early-stopping state."""
    cfg, progress = w.cfg, w.progress
    metric, mode = cfg.train.early_stopping_metric, cfg.train.early_stopping_mode
    metrics: dict[str, Any] = {"epoch": progress.epoch + 1, "step": progress.step,
                               "lr": w.scheduler.get_last_lr()[0], **train, "epoch_time_s": seconds, **val}
    if metric not in metrics:
        raise ValueError(f"train.early_stopping_metric={metric!r} is not a reported metric; "
                         f"choose one of {sorted(k for k, v in metrics.items() if isinstance(v, float))}")
    if is_better(metrics[metric], progress.best, mode):
        progress.best, progress.best_epoch, progress.bad_epochs = metrics[metric], progress.epoch + 1, 0
    else:
        progress.bad_epochs += 1
    patience = cfg.train.patience
    progress.stopped_early = (patience is not None and progress.bad_epochs >= patience
                              and progress.epoch + 1 < cfg.train.epochs)
    progress.epoch += 1
    progress.history.append(metrics)
    return metrics


def report(w: Worker, metrics: dict[str, Any]) -> None:
    """The epoch's progress line (rank 0), ``ray.train.report`` with a resumable checkpoint, and the
    early-stopping notice."""
    cfg, progress = w.cfg, w.progress
    epoch = progress.epoch
    if w.rank == 0:
        _progress(f"epoch {epoch}/{cfg.train.epochs}  train_loss {metrics['train_loss']:.4f}  "
                  f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_accuracy']:.4f}  "
                  f"val_f1 {metrics['val_f1']:.4f}  val_mcc {metrics['val_mcc']:.4f}  "
                  f"val_auroc {metrics['val_auroc']:.4f}  {metrics['train_sequences_per_s']:.1f} seq/s  "
                  f"({metrics['epoch_time_s']:.0f} s)")
    report_with_checkpoint(metrics, f"epoch_{epoch:04d}", rank=w.rank, model=w.model, optimizer=w.optimizer,
                           scheduler=w.scheduler, scaler=w.scaler, average=w.average,
                           state={**asdict(progress), "config": cfg.to_dict(), "num_classes": w.num_classes,
                                  **w.meta})
    if progress.stopped_early and w.rank == 0:
        _progress(f"early stopping: {cfg.train.early_stopping_metric} has not improved for {cfg.train.patience} "
                  f"epochs (best {progress.best:.4f} at epoch {progress.best_epoch})")


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point (see the module docstring). Returns the history on rank 0."""
    import ray.train

    from raycad.data import iter_batches

    w = setup(config)
    cfg, progress = w.cfg, w.progress
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    eval_batch = max(1, cfg.train.eval_batch_size // w.world)
    w.model.train()
    while progress.epoch < cfg.train.epochs and not progress.stopped_early:
        epoch, start = progress.epoch, time.perf_counter()
        train = train_epoch(w, iter_batches(train_shard, cfg, "train", w.rows_per_batch, epoch, seed_offset=w.rank,
                                            device=w.device, rows_are_batches=w.bucketed,
                                            shuffle_rows=w.shuffle_rows, rank=w.rank, world=w.world))
        val = validate(w, iter_batches(val_shard, cfg, "validation", eval_batch, epoch, seed_offset=w.rank,
                                       device=w.device))
        report(w, end_epoch(w, train, val, time.perf_counter() - start))
    if w.rank == 0:
        return {k: getattr(progress, k) for k in ("history", "best", "best_epoch", "stopped_early", "step")}
    return None


def _progress(message: str) -> None:
    """One progress line from rank 0 for the terminal (see `raycad.runtime.worker_progress`)."""
    from raycad.runtime import worker_progress

    worker_progress(message)


def _eta(elapsed: float, done: int, per_epoch: int, epochs_left: int) -> str:
    """Time left of the training run from this epoch's pace (validation passes not counted), e.g. "3m05s"."""
    if done <= 0:
        return "?"
    per_batch = elapsed / done
    seconds = int(per_batch * ((per_epoch - done) + epochs_left * per_epoch))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, params: list[torch.Tensor],
                    grad_clip: float | None) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
