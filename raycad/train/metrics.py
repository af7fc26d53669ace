"""Classification metrics that are exact across Ray Train workers.

Every worker accumulates, in an `EvalAccumulator`, a confusion matrix, the summed loss and the class
probabilities with their labels. `all_reduce()` sums the counts over the process group and gathers every
worker's probabilities (in fixed-size chunks, so a large split never needs one huge collective); `compute()`
then gives accuracy, macro F1, MCC (Gorodkin's multi-class form), macro one-vs-rest AUROC and per-class counts.
All of it is exact (AUROC equals scikit-learn's ``roc_auc_score``, ties counted one half), and every worker
sees identical metrics, which keeps early stopping in lock-step across ranks.

Memory: one float64 per class and record (8 * C bytes per record: 16 MB for a million binary records).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

GATHER_CHUNK_ROWS = 1 << 16
"""Records per all-gather when the scores are collected from the workers."""


class EvalAccumulator:
    """Everything the evaluation metrics of one split need: counts, summed loss, probabilities and labels."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # [true, predicted]
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self._probs: list[torch.Tensor] = []   # [B, C] float64 per batch
        self._labels: list[torch.Tensor] = []  # [B] int64 per batch

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float | torch.Tensor | None = None) -> None:
        """Add a batch: ``logits`` [B, C], ``labels`` [B]; ``loss_sum`` = the batch's summed (not mean) loss."""
        logits = logits.detach().float().cpu()
        labels = labels.detach().long().cpu()
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be [batch, {self.num_classes}], got {tuple(logits.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels outside [0, {self.num_classes}): {labels.unique().tolist()}")
        c = self.num_classes
        preds = logits.argmax(dim=1)
        self.confusion += torch.bincount(labels * c + preds, minlength=c * c).view(c, c).double()
        self._probs.append(logits.double().softmax(dim=1))
        self._labels.append(labels)
        if loss_sum is None:
            loss_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        self.loss_sum += float(loss_sum)

    @property
    def count(self) -> int:
        return int(self.confusion.sum().item())

    @property
    def probs(self) -> torch.Tensor:
        """Class probabilities of every record added (after `all_reduce`: of every worker), ``[N, C]`` float64."""
        return torch.cat(self._probs) if self._probs else torch.zeros(0, self.num_classes, dtype=torch.float64)

    @property
    def labels(self) -> torch.Tensor:
        return torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)

    def merge(self, other: EvalAccumulator) -> EvalAccumulator:
        """Add ``other``'s records to this accumulator (what `all_reduce` does across processes). Returns self."""
        self.confusion += other.confusion
        self.loss_sum += other.loss_sum
        self._probs += other._probs
        self._labels += other._labels
        return self

    def all_reduce(self, chunk_rows: int = GATHER_CHUNK_ROWS) -> EvalAccumulator:
        """Combine every worker's state over the default process group (no-op without one). Returns self.

        Counts and loss are summed; probabilities and labels are all-gathered, ``chunk_rows`` records per
        collective, in rank order.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")
        sums = torch.cat([self.confusion.flatten(), self.loss_sum.view(1)]).to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
        self.confusion = sums[:-1].view_as(self.confusion).clone()
        self.loss_sum = sums[-1].clone()
        # One row per record: the C probabilities and the label (exact as float64 for any label < 2**53).
        rows = torch.cat([self.probs, self.labels.double()[:, None]], dim=1)
        sizes_out = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes_out, torch.tensor([len(rows)], device=device))
        sizes = [int(n) for n in sizes_out]
        gathered: list[list[torch.Tensor]] = [[] for _ in sizes]
        for start in range(0, max(sizes), chunk_rows):
            piece = rows[start:start + chunk_rows].to(device)
            padded = torch.zeros(min(chunk_rows, max(sizes) - start), rows.shape[1], dtype=rows.dtype, device=device)
            padded[:len(piece)] = piece
            out = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(out, padded)
            for rank, part in enumerate(out):
                keep = max(0, min(len(padded), sizes[rank] - start))
                gathered[rank].append(part[:keep].cpu())
        everything = torch.cat([part for parts in gathered for part in parts])
        self._probs = [everything[:, :-1].contiguous()]
        self._labels = [everything[:, -1].long()]
        return self

    def compute(self, prefix: str = "") -> dict[str, Any]:
        """Metrics as plain Python numbers: loss, accuracy, f1 (macro), mcc, auroc, n, and per-class counts."""
        out = metrics_from_confusion(self.confusion)
        out["auroc"] = macro_auroc(self.probs, self.labels)
        out["loss"] = float(self.loss_sum) / max(self.count, 1)
        return {f"{prefix}{k}": v for k, v in out.items()}


def metrics_from_confusion(confusion: torch.Tensor) -> dict[str, Any]:
    """Accuracy, macro F1, MCC and per-class counts from a [true, predicted] confusion matrix."""
    cm = confusion.double()
    n = cm.sum()
    tp = cm.diag()
    support = cm.sum(dim=1)  # true count per class
    predicted = cm.sum(dim=0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(tp))
    present = (support > 0) | (predicted > 0)  # macro average over classes seen in truth or prediction (as sklearn)
    correct = tp.sum()
    # Gorodkin (2004) multi-class MCC; equals the usual binary MCC for two classes.
    cov_ytyp = correct * n - (support * predicted).sum()
    cov_ypyp = n * n - (predicted * predicted).sum()
    cov_ytyt = n * n - (support * support).sum()
    mcc_denom = (cov_ytyt * cov_ypyp).sqrt()
    return {
        "n": int(n.item()),
        "accuracy": float(correct / n) if n > 0 else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "mcc": float(cov_ytyp / mcc_denom) if mcc_denom > 0 else 0.0,
        "support": [int(v) for v in support.tolist()],
        "predicted": [int(v) for v in predicted.tolist()],
        "true_positives": [int(v) for v in tp.tolist()],
    }


def binary_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Exact AUROC (Mann-Whitney U / (n_pos n_neg)) of ``scores`` for the boolean ``positive``; ties count 1/2.

    NaN when there are no positive or no negative records.
    """
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    first_rank = torch.cumsum(counts, 0) - counts + 1          # 1-based rank of each distinct value's first record
    mid_rank = first_rank.double() + (counts.double() - 1) / 2  # ties share the mean of their ranks
    rank_sum = mid_rank[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auroc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Macro one-vs-rest AUROC of class probabilities ``probs`` [N, C] against ``labels`` [N].

    For two classes this is the ordinary AUROC of P(class 1) (class 0's curve is its mirror image). Classes
    with no positive or no negative records are left out of the average; NaN when none is left.
    """
    classes = range(1, 2) if probs.shape[1] == 2 else range(probs.shape[1])
    values = [binary_auroc(probs[:, c], labels == c) for c in classes]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")
