"""LoRA for Caduceus through `peft`, with the tied bidirectional projections handled on purpose.

`apply_lora` wraps a `CaduceusForSequenceClassification` with LoRA adapters on the Mamba linear projections
(``in_proj``, ``x_proj``, ``dt_proj``, ``out_proj`` by default), freezes the backbone and leaves the whole
classification head trainable (every parameter outside ``model.caduceus``; no ``modules_to_save`` copies).

Tied projections: in a bidirectional Caduceus layer ``mamba_rev.in_proj`` and ``mamba_rev.out_proj`` are the
*same* modules as ``mamba_fwd``'s (one weight serves both directions). `peft` finds targets through
``named_modules()``, which lists a shared module once, so it wraps only the ``mamba_fwd`` path and the reverse
direction would keep calling the bare base layer, silently skipping the adapter. `retie_lora_layers` points
every other reference to a wrapped base layer at its LoRA wrapper, so both directions run through **one
adapter**, exactly as they share one base weight; merging then folds that single adapter into the single
shared weight and the tie survives (`merge_lora`). ``x_proj``/``dt_proj`` are not shared and get one adapter
per direction. Under DDP the shared adapter's parameters appear once in ``parameters()``, so gradients from
both directions are summed into it and all-reduced once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from raycad.config import FinetuneConfig, PeftSection


LORA_ON_RANDOM_INIT = (
    "LoRA without pretrained weights: the backbone is randomly initialised and frozen, so only the adapters "
    "and the head learn and results are poor. Set model.pretrained=<dir or hub id>, or fine-tune the whole "
    "network (peft.method=none; in raycad tune: space.method=[full], the default without a pretrained model).")


def lora_on_random_init(cfg: FinetuneConfig, methods: list[str] | None = None) -> bool:
    """Whether ``cfg`` (or a sweep trying ``methods``) would train LoRA adapters on a random backbone."""
    lora = "lora" in methods if methods is not None else cfg.peft.method == "lora"
    return lora and cfg.model.pretrained is None


def _tuner_layer_type() -> type:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


def apply_lora(model: nn.Module, peft_cfg: PeftSection, backbone_attr: str = "caduceus") -> nn.Module:
    """Add LoRA adapters to ``model``'s backbone (a `peft.PeftModel`); backbone frozen, adapters and head trainable."""
    from peft import LoraConfig, get_peft_model

    backbone = getattr(model, backbone_attr, None)
    if backbone is None:
        raise ValueError(f"{type(model).__name__} has no backbone attribute {backbone_attr!r} to apply LoRA to")
    backbone_params = {id(p) for p in backbone.parameters()}
    lora_config = LoraConfig(r=peft_cfg.r, lora_alpha=peft_cfg.alpha, lora_dropout=peft_cfg.dropout,
                             target_modules=list(peft_cfg.target_modules), bias="none")
    model = get_peft_model(model, lora_config)
    retie_lora_layers(model)
    # Trainable: the new adapter weights and everything outside the (pre-LoRA) backbone, i.e. the head.
    for param in model.parameters():
        param.requires_grad_(id(param) not in backbone_params)
    return model


def retie_lora_layers(model: nn.Module) -> int:
    """Point every extra reference to a LoRA-wrapped base layer at its wrapper; returns how many were re-tied."""
    tuner = _tuner_layer_type()
    wrapper_of: dict[int, nn.Module] = {}
    for module in model.modules():
        if isinstance(module, tuner):
            wrapper_of[id(module.get_base_layer())] = module
    retied = 0
    for parent in model.modules():
        if isinstance(parent, tuner):
            continue  # the wrapper's own ``base_layer`` slot must keep the bare layer
        for name, child in list(parent.named_children()):
            wrapper = wrapper_of.get(id(child))
            if wrapper is not None and wrapper is not parent:
                setattr(parent, name, wrapper)
                retied += 1
    return retied


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and return the plain (unwrapped) model, ties preserved."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
        # merge_and_unload replaces each wrapper under its first name only; swap the remaining (tied)
        # references for the merged base layer, so the reverse direction is again the forward one's module.
        tuner = _tuner_layer_type()
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, tuner):
                    if not getattr(child, "merged", False):
                        child.merge()
                    setattr(parent, name, child.get_base_layer())
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors are counted once."""
    trainable = total = 0
    seen: set[int] = set()
    for param in model.parameters():  # parameters() already de-duplicates shared tensors
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> LoRA wrapper for every reference in the module tree (tied references listed under each name)."""
    tuner = _tuner_layer_type()
    return {name: m for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, tuner)}


def is_lora_model(model: nn.Module) -> bool:
    from peft import PeftModel

    model = getattr(model, "module", model)  # DDP
    return isinstance(model, PeftModel)


__all__ = ["apply_lora", "count_parameters", "is_lora_model", "lora_layers",
           "merge_lora", "retie_lora_layers"]
