"""Saving and restoring what a run needs (the model itself is built by `raycad.train.build`).

A training checkpoint (one directory per reported epoch) holds only what resuming needs:

- ``trainable.safetensors``: the trainable parameters (all of them for full fine-tuning; adapters + head
  for LoRA), keyed by their names in the un-DDP'd model; tied tensors appear once;
- ``average.safetensors`` (when ``train.weight_average`` is set): the moving average of the trainable
  parameters (`raycad.train.ema`), same keys; the weights a loaded checkpoint is evaluated and exported with;
- ``optimizer.pt``: optimizer, LR-scheduler (and fp16 grad-scaler) state;
- ``state.json``: epochs completed, optimizer steps, the per-epoch metric history, early-stopping state,
  the run's `FinetuneConfig`, the label names and ``frozen_checksum``.

Frozen weights are not stored: they come back from ``cfg.model.pretrained`` or, for a random init, from
the seeded initialisation (`raycad.train.build.build_model` seeds with ``cfg.train.seed`` on CPU). ``frozen_checksum`` (a sum
over the frozen tensors) is verified on load so a changed base model fails loudly instead of silently.

An exported model (`export_model`) is a Hugging Face-style directory: LoRA merged, ``save_pretrained``
(config.json + model.safetensors), the tokenizer, and ``raycad.json`` (label names, max_length, metrics).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from raycad.config import FinetuneConfig

if TYPE_CHECKING:
    import ray.train

    from raycad.train.ema import WeightAverage

WEIGHTS_NAME = "trainable.safetensors"
AVERAGE_NAME = "average.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "state.json"
EXPORT_META_NAME = "raycad.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP/FSDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def frozen_checksum(model: nn.Module) -> float:
    """Sum of all frozen parameters (float64): a cheap fingerprint of the weights a checkpoint does not hold."""
    total = 0.0
    for param in unwrap(model).parameters():
        if not param.requires_grad:
            total += float(param.detach().double().sum())
    return total


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> CPU copy of every trainable parameter (shared tensors once, under their first name)."""
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in unwrap(model).named_parameters() if p.requires_grad}


def save_training_checkpoint(directory: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler: Any, state: dict[str, Any], scaler: Any = None,
                             average: WeightAverage | None = None) -> Path:
    """Write a resumable checkpoint into ``directory`` (see the module docstring for the layout)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state_dict(model), str(directory / WEIGHTS_NAME))
    if average is not None:
        save_file(average.state_dict(), str(directory / AVERAGE_NAME))
        state = {**state, "average_updates": average.updates}
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}, directory / OPTIMIZER_NAME)
    state = {**state, "frozen_checksum": frozen_checksum(model)}
    (directory / STATE_NAME).write_text(json.dumps(state, indent=1))
    return directory


def read_state(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a raycad training checkpoint (no {STATE_NAME})")
    return json.loads(path.read_text())


def load_trainable_weights(model: nn.Module, directory: str | os.PathLike, expected_checksum: float | None,
                           file: str = WEIGHTS_NAME) -> None:
    """Load ``file`` (``trainable.safetensors``) into ``model``; every trainable parameter must be in the file."""
    path = Path(directory) / file
    weights = load_file(str(path))
    target = unwrap(model)
    params = dict(target.named_parameters())
    unknown = sorted(set(weights) - set(params))
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in weights)
    if unknown or missing:
        raise ValueError(f"checkpoint {path} does not match the model: unknown keys {unknown[:5]}, "
                         f"missing trainable keys {missing[:5]} (was the config changed?)")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    if expected_checksum is not None:
        actual = frozen_checksum(model)
        if abs(actual - expected_checksum) > 1e-6 * max(1.0, abs(expected_checksum)):
            raise ValueError(
                f"checkpoint {directory}: the frozen base weights differ from the ones it was trained on "
                f"(checksum {actual:.6g} != {expected_checksum:.6g}); the pretrained model, preset or seed changed")


def load_training_state(directory: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: Any = None, average: WeightAverage | None = None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler (scaler, weight average) from a checkpoint; returns its
    ``state.json``."""
    state = read_state(directory)
    load_trainable_weights(model, directory, state.get("frozen_checksum"))
    if average is not None:
        path = Path(directory) / AVERAGE_NAME
        if not path.is_file():
            raise ValueError(f"checkpoint {directory} has no {AVERAGE_NAME}: it was trained without "
                             "train.weight_average, so it cannot resume a run that averages weights")
        average.load_state_dict(load_file(str(path)), state["average_updates"])
    blob = load_optimizer_file(Path(directory) / OPTIMIZER_NAME)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob.get("scaler") is not None:
        scaler.load_state_dict(blob["scaler"])
    return state


def load_optimizer_file(path: Path) -> dict[str, Any]:
    """``optimizer.pt`` read with ``torch.load(weights_only=True)``: tensors and plain containers only.

    A checkpoint may come from shared storage (``s3://``); unpickling arbitrary objects from it could run code
    on every worker that resumes. The optimizer, LambdaLR and GradScaler states need nothing else.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line),
                      str(err).splitlines()[0])
        raise ValueError(f"{path}: refusing to load it: it holds objects other than tensors and plain containers, "
                         f"which could run code when unpickled ({reason}). raycad never writes such a file; "
                         f"was the checkpoint replaced?") from err


def load_model_from_checkpoint(checkpoint: ray.train.Checkpoint | str | os.PathLike,
                               merge: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The trained classifier from a training checkpoint (LoRA merged by default), in eval mode, on CPU: the
    averaged weights when the run averaged them (``average.safetensors``), else the trained ones.

    Returns ``(model, state)`` where ``state`` is the checkpoint's ``state.json`` (config, history, labels).
    """
    if hasattr(checkpoint, "as_directory"):  # a ray.train.Checkpoint (which refuses to act as a path)
        with checkpoint.as_directory() as directory:
            return load_model_from_checkpoint(directory, merge=merge)
    state = read_state(checkpoint)
    from raycad.train.build import build_model

    cfg = FinetuneConfig.from_dict(state["config"], source=str(Path(checkpoint) / STATE_NAME))
    model = build_model(cfg, state["num_classes"], state.get("class_names"))
    averaged = (Path(checkpoint) / AVERAGE_NAME).is_file()
    load_trainable_weights(model, checkpoint, state.get("frozen_checksum"), AVERAGE_NAME if averaged else WEIGHTS_NAME)
    if merge:
        from raycad.train.lora import merge_lora

        model = merge_lora(model)
    return model.eval(), state


def export_model(model: nn.Module, directory: str | os.PathLike, *, meta: dict[str, Any]) -> Path:
    """Save a merged classifier as a Hugging Face-style directory that ``from_pretrained`` loads."""
    from raycad.model import CaduceusTokenizer
    from raycad.train.lora import merge_lora

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = merge_lora(unwrap(model))
    model.save_pretrained(str(directory))
    tokenizer = CaduceusTokenizer()
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(directory))
    (directory / EXPORT_META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_exported(directory: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """An exported classifier (eval mode, CPU) and its ``raycad.json`` metadata."""
    from raycad.data.records import RecordError
    from raycad.model import CaduceusForSequenceClassification

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} is not an exported model directory (no config.json)")
    meta_path = directory / EXPORT_META_NAME
    for path in (directory / "config.json", meta_path):  # name the broken file, not just "JSONDecodeError"
        if path.is_file():
            try:
                json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RecordError(f"{path}: not valid JSON ({err})", "unreadable_file") from None
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    try:
        model = CaduceusForSequenceClassification.from_pretrained(str(directory))
    except Exception as err:
        if type(err).__name__ != "SafetensorError" and not isinstance(err, (OSError, EOFError)):
            raise
        weights = next((p for p in (directory / "model.safetensors", directory / "pytorch_model.bin")
                        if p.is_file()), directory)
        raise RecordError(f"{weights}: cannot load the weights ({' '.join(str(err).split())})",
                          "unreadable_file") from None
    return model.eval(), meta
