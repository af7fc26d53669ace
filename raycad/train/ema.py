"""An exponential moving average of a model's trainable weights (Polyak averaging), for evaluation.

Training keeps updating the model's own weights; after every optimizer step `WeightAverage.update` moves the
average towards them. Validation, the best checkpoint's test evaluation and the exported model use the average
(`WeightAverage.applied` swaps it in and back), which smooths the epoch-to-epoch noise of small-batch training
on small data. The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
averages are not dominated by the random initialisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from raycad.train.checkpoint import unwrap


class WeightAverage:
    """The moving average of ``model``'s trainable parameters (names as in the un-DDP'd model)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"a weight-average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.weights = {name: p.detach().clone() for name, p in self._trainable(model)}

    @staticmethod
    def _trainable(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, p) for name, p in unwrap(model).named_parameters() if p.requires_grad)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        for name, param in self._trainable(model):
            self.weights[name].lerp_(param.detach(), weight)
        self.updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the averaged weights inside the block, its own weights again after it."""
        own = {}
        for name, param in self._trainable(model):
            own[name] = param.detach().clone()
            param.copy_(self.weights[name])
        try:
            yield model
        finally:
            for name, param in self._trainable(model):
                param.copy_(own[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights as CPU tensors, keyed like `raycad.train.checkpoint.trainable_state_dict`."""
        return {name: t.to("cpu", copy=True).contiguous() for name, t in self.weights.items()}

    def load_state_dict(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        if set(weights) != set(self.weights):
            raise ValueError(f"weight average does not match the model: keys {sorted(set(weights) ^ set(self.weights))[:5]}")
        for name, tensor in weights.items():
            self.weights[name].copy_(tensor)
        self.updates = updates

