"""The run's model from its config: a Caduceus model (pretrained weights or a seeded random init), the
classification head the config asks for, and LoRA adapters when ``peft.method="lora"``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raycad.config import FinetuneConfig


def head_config_kwargs(cfg: FinetuneConfig, num_classes: int) -> dict[str, Any]:
    """The classification-head fields of `CaduceusConfig` for this run."""
    return {
        "num_labels": num_classes,
        "pooling": cfg.head.pooling,
        "pool_ignore_padding": cfg.head.pool_ignore_padding,
        "head_hidden_sizes": list(cfg.head.hidden_sizes),
        "head_dropout": cfg.head.dropout,
        "head_activation": cfg.head.activation,
        "conjoin_train": cfg.head.conjoin_train,
        "conjoin_eval": cfg.head.conjoin_eval,
    }


def build_base_model(model_class: type, cfg: Any, **config_kwargs: Any) -> nn.Module:
    """``model_class`` (a Caduceus model class) as ``cfg.model`` says, on CPU: ``cfg.model.pretrained`` weights
    (released layout or a raycad export) or a random init of ``cfg.model.preset`` seeded with ``cfg.train.seed``;
    ``config_kwargs`` and ``cfg.model.overrides`` change the config."""
    from raycad.model import CaduceusConfig
    from raycad.model.scan import set_scan_impl

    set_scan_impl(cfg.model.scan_impl)  # process-wide: every Ray worker builds its model through here
    torch.manual_seed(cfg.train.seed)  # identical init on every worker and on every resume
    if cfg.model.pretrained:
        model = model_class.from_pretrained(cfg.model.pretrained, **config_kwargs, **cfg.model.overrides)
    else:
        config = CaduceusConfig.from_preset(cfg.model.preset, **{**cfg.model.overrides, **config_kwargs})
        model = model_class(config)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def build_model(cfg: FinetuneConfig, num_classes: int, class_names: list[str] | None = None) -> nn.Module:
    """The run's classifier on CPU: pretrained weights or a seeded random init, plus LoRA if configured."""
    from raycad.model import CaduceusForSequenceClassification

    head = head_config_kwargs(cfg, num_classes)
    if class_names:
        head["id2label"] = dict(enumerate(class_names))
        head["label2id"] = {name: i for i, name in enumerate(class_names)}
    model = build_base_model(CaduceusForSequenceClassification, cfg, **head)
    if cfg.peft.method == "lora":
        from raycad.train.lora import apply_lora

        model = apply_lora(model, cfg.peft)
    return model
