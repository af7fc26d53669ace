"""The model on a Ray Data actor: `Predictor` loads a fine-tuned model once and scores batches of records.

`Predictor` is the callable class that `raycad.infer.score` hands to ``Dataset.map_batches`` over an actor
pool. Each actor loads the model once (an exported directory, a training checkpoint directory or a
``ray.train.Checkpoint``; `load_for_inference`), then for every batch of rows:

1. `encode`: token ids from a ``sequence`` column (tokenized exactly as in training: the model's
   `ModelSpec` gives max_length, truncation side and the invalid-character policy) or an already
   tokenized ``input_ids`` column;
2. `run`: groups the rows by the width the model's `PaddingRule` gives each record, cuts the groups into
   model batches of at most ``batch_size`` records (`raycad.data.batching.width_batches`: a record's result
   does not depend on its neighbours; on CPU also at most `raycad.data.batching.CPU_BATCH_VALUES` hidden
   values), stacks the reverse-complement channel for conjoined models, calls `outputs` and puts the results
   back in row order;
3. `columns`: the output columns, here ``predicted_label``, ``prob_<class>`` per class and ``truncated``,
   with every input column except ``sequence`` / ``input_ids`` passed through (``id``, ``label``, ...).

Subclasses reuse the loading, tokenization and length-aware batching and override `outputs` (what the
model computes per model batch: e.g. pooled embeddings) and `columns` (how those become output columns).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raycad.data.batching import PaddingRule, cpu_tokens_per_call, token_lengths, width_batches
from raycad.data.records import rna_to_dna

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """How a model's inputs are made: what training recorded (``raycad.json`` or the checkpoint state)."""

    class_names: tuple[str, ...]
    padding: PaddingRule
    truncation: str = "right"
    conjoin: bool = False
    invalid_chars: str = "unk"

    @property
    def max_length(self) -> int:
        return self.padding.max_length

    @classmethod
    def from_meta(cls, meta: dict[str, Any], num_labels: int, source: str) -> ModelSpec:
        """From an export's ``raycad.json`` (or a checkpoint's state, which holds the same keys + config)."""
        config = meta.get("config") or {}
        data, head = config.get("data") or {}, config.get("head") or {}
        if "padding" not in meta and data:  # a training checkpoint: the rule is in its config
            meta = {**meta, "padding": data.get("padding"), "pad_multiple": data.get("pad_multiple")}
        names = meta.get("class_names") or [str(i) for i in range(num_labels)]
        conjoin = meta.get("conjoin_eval", head.get("conjoin_eval", False))
        return cls(class_names=tuple(str(n) for n in names), padding=PaddingRule.from_meta(meta, source),
                   truncation=meta.get("truncation") or data.get("truncation") or "right",
                   conjoin=bool(conjoin), invalid_chars=data.get("invalid_chars") or "unk")


def read_spec(model: str | os.PathLike | Any) -> ModelSpec:
    """The `ModelSpec` of an exported directory or a training checkpoint directory, without loading weights
    (a directory that is neither is an error naming it)."""
    import json

    from raycad.train.checkpoint import EXPORT_META_NAME, STATE_NAME

    if hasattr(model, "as_directory"):
        with model.as_directory() as directory:
            return read_spec(directory)
    path = Path(model)
    if (path / STATE_NAME).is_file():
        state = json.loads((path / STATE_NAME).read_text())
        return ModelSpec.from_meta(state, int(state["num_classes"]), str(path / STATE_NAME))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not an exported model directory (no config.json) nor a training "
                                f"checkpoint (no {STATE_NAME})")

    def read(file: Path) -> dict[str, Any]:
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err})") from None

    meta_path = path / EXPORT_META_NAME
    meta = read(meta_path) if meta_path.is_file() else {}
    num_labels = read(path / "config.json").get("num_labels", 2)
    return ModelSpec.from_meta(meta, int(num_labels), str(meta_path))


def load_for_inference(model: str | os.PathLike | Any) -> tuple[nn.Module, ModelSpec]:
    """(model in eval mode on CPU, its `ModelSpec`) from an exported directory, a training checkpoint
    directory or a ``ray.train.Checkpoint``."""
    from raycad.train.checkpoint import STATE_NAME, load_exported, load_model_from_checkpoint

    if hasattr(model, "as_directory"):
        with model.as_directory() as directory:
            return load_for_inference(directory)
    path = Path(model)
    net = load_model_from_checkpoint(path)[0] if (path / STATE_NAME).is_file() else load_exported(path)[0]
    return net, read_spec(model)


class Predictor:
    """Ray Data callable class: per-record class probabilities of one model (see the module docstring).

    Args:
        model: exported model directory, training checkpoint directory, or ``ray.train.Checkpoint``.
        batch_size: records per model call at most (on CPU fewer for long records: `cpu_tokens_per_call`).
        device: "cpu", "cuda" or "auto" (CUDA when this actor has a GPU).
        threads: torch threads of this actor (None: leave torch's default).
        report_process: add a ``process`` column (this actor's pid): shows where the work ran.
    """

    def __init__(self, model: str | os.PathLike | Any, *, batch_size: int = 128, device: str = "auto",
                 threads: int | None = None, report_process: bool = False) -> None:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self._setup(*load_for_inference(model), batch_size=batch_size, device=device,
                    report_process=report_process)

    @classmethod
    def from_model(cls, model: nn.Module, spec: ModelSpec, *, batch_size: int = 128,
                   device: str = "auto") -> Predictor:
        """A predictor around a model already in this process (no Ray): ``p({"sequence": seqs})``."""
        self = cls.__new__(cls)
        self._setup(model, spec, batch_size=batch_size, device=device, report_process=False)
        return self

    def _setup(self, model: nn.Module, spec: ModelSpec, *, batch_size: int, device: str,
               report_process: bool) -> None:
        import torch

        from raycad.model import CaduceusTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model, self.spec = model.to(self.device).eval(), spec
        self.batch_size = int(batch_size)
        self.max_tokens = None  # tokens per model call (records x width): capped on CPU
        if self.device.type == "cpu":
            self.max_tokens = cpu_tokens_per_call(getattr(model, "config", None), spec.conjoin)
        self.report_process = report_process
        self.tokenizer = CaduceusTokenizer(padding_side="left", truncation_side=spec.truncation,
                                           invalid="n" if spec.invalid_chars == "n" else "unk")

    # ---- steps (override outputs / columns in subclasses) ---------------------------------------------------
    def encode(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids [N, max_length] left-padded, tokens per record after truncation, whether it was truncated)."""
        if "input_ids" in batch:
            ids = np.asarray(batch["input_ids"])
            if ids.ndim != 2:
                ids = np.stack(list(ids))
            lengths = token_lengths(ids)
            return ids, lengths, np.zeros(len(ids), dtype=bool)
        # U read as T, as in training: rows a reader gave are clean already, raw strings scored directly are not
        sequences, _ = rna_to_dna(pa.array(batch["sequence"], type=pa.string()))
        enc = self.tokenizer.encode_batch(sequences, self.spec.max_length)
        return enc.input_ids, np.minimum(enc.lengths, self.spec.max_length), enc.lengths > self.spec.max_length

    def outputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the model computes for one model batch ``[B, W]`` (or ``[B, W, 2]``): class probabilities."""
        logits = self.model(input_ids=input_ids).logits.float()
        return {"probs": logits.softmax(-1)}

    def columns(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                truncated: np.ndarray) -> dict[str, np.ndarray]:
        """Output columns of a batch: the passed-through inputs, the prediction and probability per class."""
        out = {k: v for k, v in batch.items() if k not in ("sequence", "input_ids")}
        probs = outputs["probs"]
        names = np.asarray(self.spec.class_names, dtype=object)
        out["predicted_label"] = names[probs.argmax(1)] if len(probs) else np.zeros(0, dtype=object)
        for i, name in enumerate(self.spec.class_names):
            out[f"prob_{name}"] = probs[:, i]
        out["truncated"] = truncated
        return out

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """`outputs` of every row, computed in length-sorted model batches, returned in row order."""
        import torch

        from raycad.data.preprocess import conjoin

        pieces: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        with torch.inference_mode():
            for width, rows in width_batches(self.spec.padding, lengths, self.batch_size, self.max_tokens):
                part = ids[rows, ids.shape[1] - width:].astype(np.int64)
                if self.spec.conjoin:
                    part = conjoin(part)
                result = self.outputs(torch.from_numpy(np.ascontiguousarray(part)).to(self.device))
                pieces.append((rows, {k: v.detach().float().cpu().numpy() for k, v in result.items()}))
        if not pieces:
            return {"probs": np.zeros((0, len(self.spec.class_names)), dtype=np.float32)}
        order = np.concatenate([rows for rows, _ in pieces])
        merged = {k: np.concatenate([p[k] for _, p in pieces]) for k in pieces[0][1]}
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {k: v[inverse] for k, v in merged.items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, lengths, truncated = self.encode(batch)
        out = self.columns(batch, self.run(ids, lengths), truncated)
        if self.report_process:
            out["process"] = np.full(len(ids), os.getpid(), dtype=np.int64)
        return out
