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
    """Masked-token loss sum, correct predictions and target count; all-reduced across workers on demand."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.targets = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(logits.device)
        chosen = labels != IGNORE_INDEX
        self.loss_sum += float(masked_lm_loss(logits, labels, reduction="sum"))
        self.correct += int((logits.argmax(-1)[chosen] == labels[chosen]).sum())
        self.targets += int(chosen.sum())

    def all_reduce(self, device: torch.device) -> MLMMetrics:
        from raycad.train.loop import all_reduce_sum

        self.loss_sum, correct, targets = all_reduce_sum([self.loss_sum, self.correct, self.targets], device)
        self.correct, self.targets = int(correct), int(targets)
        return self

    def compute(self, prefix: str = "") -> dict[str, float | int]:
        loss = self.loss_sum / self.targets if self.targets else float("nan")
        return {f"{prefix}loss": loss,
                f"{prefix}accuracy": self.correct / self.targets if self.targets else float("nan"),
                f"{prefix}perplexity": math.exp(loss) if self.targets else float("nan"),
                f"{prefix}masked_tokens": self.targets}
