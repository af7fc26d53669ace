"""Class probabilities from an exported model for sequences in a FASTA/FASTQ or CSV/TSV/Parquet file.

Runs in-process (no Ray): records are read in order, tokenized exactly as in training (the exported
``raycad.json`` gives ``max_length``, truncation side and whether to conjoin both strands), scored in batches,
and written as CSV: ``id, predicted_label, prob_<class>...`` in input order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


def read_records(path: str | Path, sequence_column: str = "sequence", id_column: str = "id") -> tuple[list[str], list[str]]:
    """(ids, sequences) of every record; FASTA/FASTQ (optionally gzipped) or a CSV/TSV/Parquet table."""
    import pandas as pd

    from raycad.data.fastx import detect_format, read_fastx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    name = path.name.lower().removesuffix(".gz")
    if detect_format(path) is not None:
        records = list(read_fastx(str(path)))
        return [r.id for r in records], [r.sequence for r in records]
    suffix = Path(name).suffix
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in TABLE_SUFFIXES:
        try:
            frame = pd.read_csv(path, sep=TABLE_SUFFIXES[suffix], dtype={sequence_column: str})
        except pd.errors.EmptyDataError:
            from raycad.data.records import RecordError

            raise RecordError(f"{path}: empty file (no header, no records)", "unreadable_file") from None
    else:
        raise ValueError(f"{path}: unsupported input (expected FASTA/FASTQ, .csv, .tsv or .parquet)")
    if sequence_column not in frame.columns:
        raise ValueError(f"{path}: no {sequence_column!r} column (columns: {list(frame.columns)})")
    empty = frame[sequence_column].isna() | (frame[sequence_column].astype(str).str.len() == 0)
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise ValueError(f"{path}: record {row} (data row {row + 2}) has an empty sequence")
    ids = frame[id_column].astype(str).tolist() if id_column in frame.columns else [str(i) for i in range(len(frame))]
    return ids, frame[sequence_column].astype(str).tolist()


@torch.no_grad()
def predict_proba(model: nn.Module, sequences: list[str], *, max_length: int, truncation: str = "right",
                  conjoin: bool = False, batch_size: int = 128, invalid: str = "unk") -> np.ndarray:
    """Softmax class probabilities [N, C] for raw DNA strings, tokenized as in training."""
    from raycad.data.preprocess import conjoin as conjoin_ids
    from raycad.model import CaduceusTokenizer

    tokenizer = CaduceusTokenizer(padding_side="left", truncation_side=truncation, invalid=invalid)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        ids = tokenizer.encode_batch(sequences[start:start + batch_size], max_length).input_ids.astype(np.int64)
        if conjoin:
            ids = conjoin_ids(ids)
        logits = model(input_ids=torch.from_numpy(ids).to(device)).logits.float()
        out.append(logits.softmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, getattr(model.config, "num_labels", 2)), dtype=np.float32)


def predict_file(model_dir: str | Path, input_path: str | Path, output_path: str | Path | None = None, *,
                 batch_size: int = 128, sequence_column: str = "sequence", id_column: str = "id") -> pd.DataFrame:
    """Score every record of ``input_path`` with the exported model; writes ``output_path`` when given."""
    import pandas as pd

    from raycad.train.checkpoint import load_exported

    model, meta = load_exported(model_dir)
    config = meta.get("config", {})
    max_length = meta.get("max_length")
    if not max_length:
        raise ValueError(f"{model_dir}: raycad.json has no max_length; was this model exported by raycad?")
    ids, sequences = read_records(input_path, sequence_column, id_column)
    probs = predict_proba(model, sequences, max_length=int(max_length),
                          truncation=meta.get("truncation") or "right", conjoin=bool(meta.get("conjoin_eval")),
                          batch_size=batch_size, invalid=config.get("data", {}).get("invalid_chars", "unk"))
    names = meta.get("class_names") or [str(i) for i in range(probs.shape[1])]
    frame = pd.DataFrame({"id": ids, "predicted_label": [names[i] for i in probs.argmax(1)] if len(probs) else []})
    for i, name in enumerate(names):
        frame[f"prob_{name}"] = probs[:, i]
    if output_path is not None:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(output_path, index=False)
    return frame
