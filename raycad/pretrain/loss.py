"""The masked-LM loss and its metrics: cross-entropy over the masked positions only.

`masked_lm_loss` is the training objective: the mean cross-entropy of the model's logits at the positions
whose label is not `IGNORE_INDEX` (the positions `raycad.pretrain.masking.mask_tokens` chose).
`MLMMetrics` sums loss, correct predictions and target counts over batches and workers, and turns them into
masked-token loss, accuracy and perplexity (``exp`` of the mean loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raycad.pretrain.masking import IGNORE_INDEX


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` [B, L, V] against ``labels`` [B, L] over the positions labelled != -100.

    ``reduction="sum"`` gives the sum (for metrics); "mean" of a batch without targets is 0 (with a gradient
    path), not NaN, so a rare window without a chosen position cannot poison a step.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1).to(flat_logits.device)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return total
    count = (flat_labels != IGNORE_INDEX).sum()
    return total / count.clamp(min=1)


class MLMMetrics:
    """Masked-token loss sum, correct predictions and target count; all-reduced across workers on demand.

    `update` accumulates on the logits' device without reading a value back, so a training step costs no host
    synchronisation; the counts are read when `all_reduce` / `compute` need them."""

    def __init__(self) -> None:
        self._sums: torch.Tensor | None = None  # float64 [loss sum, correct, targets]
        self._reduced: list[float] | None = None

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        """Add a batch; ``loss_sum`` = its summed masked-token loss when the caller already has it."""
        labels = labels.to(logits.device)
        chosen = labels != IGNORE_INDEX
        if loss_sum is None:
            loss_sum = masked_lm_loss(logits, labels, reduction="sum")
        correct = ((logits.argmax(-1) == labels) & chosen).sum()
        sums = torch.stack([loss_sum.double(), correct.double(), chosen.sum().double()])
        self._sums = sums if self._sums is None else self._sums + sums
        self._reduced = None

    def _values(self) -> list[float]:
        if self._reduced is None:
            self._reduced = self._sums.tolist() if self._sums is not None else [0.0, 0.0, 0.0]
        return self._reduced

    @property
    def loss_sum(self) -> float:
        return self._values()[0]

    @property
    def correct(self) -> int:
        return int(self._values()[1])

    @property
    def targets(self) -> int:
        return int(self._values()[2])

    def all_reduce(self, device: torch.device) -> MLMMetrics:
        from raycad.train.loop import all_reduce_sum

        self._reduced = all_reduce_sum(self._values(), device)
        return self

    def compute(self, prefix: str = "") -> dict[str, float | int]:
        loss_sum, targets = self.loss_sum, self.targets
        loss = loss_sum / targets if targets else float("nan")
        return {f"{prefix}loss": loss,
                f"{prefix}accuracy": self.correct / targets if targets else float("nan"),
                f"{prefix}perplexity": math.exp(loss) if targets else float("nan"),
                f"{prefix}masked_tokens": targets}
