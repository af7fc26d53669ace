"""The Ray Data pipelines behind ``raycad embed``, ``raycad explain`` and ``raycad score-variants``.

All three run the model through raycad's batch-inference component (`raycad.infer.score`: ``map_batches``
over an actor pool; each actor loads the exported model once, tokenizes and pads as in training): each verb
is a `raycad.infer.Predictor` subclass that computes something else per record. The driver streams the
results back in input order and writes them (one Parquet file via `raycad.infer.TableWriter`, or per-record
files for ``explain``), and says what it did and what it skipped.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raycad.infer.predictor import Predictor

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_RECORDS = 50
"""``explain`` stops after this many records by default: each costs ``3 * length + 1`` forward passes."""


def _strands_folded(input_ids: torch.Tensor) -> torch.Tensor:
    """``[B, W]`` ids from what `Predictor.run` passes (``[B, W, 2]`` for conjoined models): the forward strand.

    The functions of `raycad.interpret` handle the reverse complement themselves.
    """
    return input_ids[..., 0] if input_ids.dim() == 3 else input_ids


# ---- embed ----------------------------------------------------------------------------------------------------


class EmbeddingPredictor(Predictor):
    """`Predictor` whose output per record is its pooled, RC-averaged embedding(s) (`embed_ids`)."""

    def __init__(self, model: Any, *, pooling: str = "mean", layers: Sequence[int] = (), **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.pooling, self.layers = pooling, tuple(layers)

    def outputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        from raycad.interpret.embedding import embed_ids

        return embed_ids(self.model, _strands_folded(input_ids), pooling=self.pooling, layers=self.layers)

    def columns(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                truncated: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k not in ("sequence", "input_ids")}
        empty = np.zeros((0, self.model.config.d_model), np.float32)  # a batch without rows has no outputs
        for name in ["embedding", *(f"layer_{i}" for i in self.layers)]:
            out[name] = outputs.get(name, empty)
        out["truncated"] = truncated
        return out


def embed(model_dir: str | os.PathLike, input_uri: str | list[str], output: str | os.PathLike, *,
          pooling: str = "mean", layers: Sequence[int] = (), batch_size: int = 64, use_gpu: bool = False,
          actors: int | None = None, format: str | None = None, sequence_column: str | None = None,
          id_column: str | None = None, s3_endpoint: str | None = None) -> dict[str, Any]:
    """Pooled, reverse-complement-averaged embeddings of every record of ``input_uri`` -> ``output`` (Parquet).

    Columns: ``row`` (0-based input position), ``id``, ``embedding`` (fixed-size list of float32, ``d_model``),
    ``layer_<i>`` for each ``i`` in ``layers`` (see `raycad.interpret.embedding`) and ``truncated``. The input
    is anything `raycad.data.read_sequences` reads. Returns a summary (records, seconds, records/s, columns).
    """
    from raycad.data import read_sequences
    from raycad.infer.output import TableWriter, output_format
    from raycad.infer.predictor import read_spec
    from raycad.infer.score import ordered, score
    from raycad.interpret.embedding import POOLINGS

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if output_format(output) != "parquet":
        raise ValueError(f"output {output}: embeddings are arrays, write them to a .parquet file")
    spec, shape = read_spec(model_dir), model_shape(model_dir)
    bad = [i for i in layers if not 0 <= i <= shape["n_layer"]]
    if bad:
        raise ValueError(f"layers {bad} out of range: {model_dir} has hidden states 0..{shape['n_layer']}")
    start = time.perf_counter()
    ds = read_sequences(input_uri, format=format, sequence_column=sequence_column, id_column=id_column,
                        label_from="none", invalid_chars="n" if spec.invalid_chars == "n" else "unk",
                        s3_endpoint=s3_endpoint).drop_columns(["label"])
    scored = score(ds, model_dir, batch_size=batch_size, use_gpu=use_gpu, actors=actors,
                   predictor=EmbeddingPredictor, predictor_kwargs={"pooling": pooling, "layers": list(layers)})
    columns = ["embedding", *(f"layer_{i}" for i in layers)]
    truncated = 0
    with TableWriter(output, s3_endpoint=s3_endpoint) as writer:
        for batch in ordered(scored).iter_batches(batch_format="numpy", batch_size=None):
            writer.write(_embedding_table(batch, columns, shape["d_model"]))
            truncated += int(batch["truncated"].sum())
        if writer.rows == 0:
            empty = {"id": np.zeros(0, str), "truncated": np.zeros(0, bool),
                     **{c: np.zeros((0, shape["d_model"]), np.float32) for c in columns}}
            writer.write(_embedding_table(empty, columns, shape["d_model"]))
        records = writer.rows
    seconds = time.perf_counter() - start
    return {"records": records, "truncated": truncated, "seconds": seconds,
            "records_per_s": records / seconds if seconds else 0.0, "output": str(output),
            "d_model": shape["d_model"], "columns": ["row", "id", *columns, "truncated"]}


def _embedding_table(batch: dict[str, np.ndarray], columns: list[str], width: int) -> pa.Table:
    arrays = {"id": pa.array(batch["id"].astype(str), pa.string())}
    for c in columns:
        values = np.ascontiguousarray(batch[c], dtype=np.float32).reshape(-1, width)
        arrays[c] = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), width)
    arrays["truncated"] = pa.array(batch["truncated"].astype(bool))
    return pa.table(arrays)


def model_shape(model_dir: str | os.PathLike) -> dict[str, int]:
    """``d_model`` and ``n_layer`` from an exported model's config.json (no weights loaded)."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    return {"d_model": int(config["d_model"]), "n_layer": int(config["n_layer"])}


# ---- score-variants -------------------------------------------------------------------------------------------


class VariantPredictor(Predictor):
    """`Predictor` for rows of `raycad.interpret.variants.variant_windows`: strand-averaged logits of the ref and
    alt windows of every scorable allele (NaN for the others, which pass through with their ``status``)."""

    def outputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        from raycad.interpret.attribution import strand_logits

        return {"logits": strand_logits(self.model, _strands_folded(input_ids))}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = np.flatnonzero(batch["status"] == "")
        out = {k: v for k, v in batch.items() if k not in ("ref_sequence", "alt_sequence")}
        for side in ("ref", "alt"):
            logits = np.full((len(batch["status"]), len(self.spec.class_names)), np.nan, np.float32)
            if len(good):
                ids, lengths, _ = self.encode({"sequence": batch[f"{side}_sequence"][good]})
                logits[good] = self.run(ids, lengths)["logits"]
            out[f"{side}_logits"] = logits
        return out


@dataclass
class VariantReport:
    """What `score_variants` did: alleles scored, skipped alleles by reason, N-filled windows, timing."""

    scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    edge_padded: int = 0
    seconds: float = 0.0
    output: str = ""
    skipped_file: str | None = None

    @property
    def variants_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


def score_variants(model_dir: str | os.PathLike, vcf: str | os.PathLike, reference: str | os.PathLike,
                   output: str | os.PathLike, *, batch_size: int = 64, use_gpu: bool = False,
                   actors: int | None = None, region_size: int | None = None) -> VariantReport:
    """Score every allele of ``vcf`` against ``reference`` (see `raycad.interpret.variants`) -> ``output``.

    Columns: ``row, chrom, pos, id, ref, alt, window_start, edge_padded`` and per class ``c``: ``prob_ref_<c>``,
    ``prob_alt_<c>`` (softmax of the strand-averaged logits), ``delta_<c>`` (alt - ref) and ``log_odds_<c>``
    (log odds ratio alt vs ref). Alleles that cannot be scored are listed with their reason in
    ``<output>.skipped.tsv`` and counted in the report, never dropped silently. An indexed VCF (tabix/CSI) is
    read in parallel, by region, inside Ray tasks.
    """
    import pysam
    import ray.data

    from raycad.infer.output import TableWriter
    from raycad.infer.predictor import read_spec
    from raycad.infer.score import ordered, score
    from raycad.interpret.variants import REGION_SIZE, plan_regions
    from raycad.runtime import init_ray

    spec = read_spec(model_dir)
    for path in (vcf, reference):
        if not Path(path).is_file():
            raise FileNotFoundError(f"file not found: {path}")
    with pysam.FastaFile(str(reference)) as fasta:  # builds a missing .fai; a bad FASTA fails here
        lengths = dict(zip(fasta.references, fasta.lengths))
    regions = plan_regions(str(vcf), lengths, region_size or REGION_SIZE)
    start = time.perf_counter()
    init_ray()
    ds = ray.data.from_items([asdict(r) for r in regions], override_num_blocks=len(regions))
    ds = ds.flat_map(_windows_of_region, fn_kwargs={"vcf": str(Path(vcf).resolve()),
                                                    "reference": str(Path(reference).resolve()),
                                                    "width": spec.max_length},
                    num_cpus=0.5)  # pysam reads: light, and must fit beside the model actors on a small node
    scored = score(ds, model_dir, batch_size=batch_size, use_gpu=use_gpu, actors=actors,
                   predictor=VariantPredictor)
    names = list(spec.class_names)
    report = VariantReport(output=str(output))
    skipped: Counter[str] = Counter()
    skipped_rows: list[str] = []
    with TableWriter(output) as writer:
        for batch in ordered(scored).iter_batches(batch_size=None, batch_format="numpy"):
            good = batch["status"] == ""
            for i in np.flatnonzero(~good):
                skipped[str(batch["status"][i])] += 1
                skipped_rows.append("\t".join(str(batch[k][i]) for k in ("chrom", "pos", "id", "ref", "alt", "status")))
            if good.any():
                writer.write(variant_table({k: v[good] for k, v in batch.items()}, names))
                report.edge_padded += int(batch["edge_padded"][good].sum())
        if writer.rows == 0:
            writer.write(variant_table(_no_variants(len(names)), names))
        report.scored = writer.rows
    if skipped_rows:
        skipped_path = Path(f"{output}.skipped.tsv")
        skipped_path.write_text("chrom\tpos\tid\tref\talt\treason\n" + "\n".join(skipped_rows) + "\n")
        report.skipped_file = str(skipped_path)
    report.skipped = dict(sorted(skipped.items()))
    report.seconds = time.perf_counter() - start
    return report


def _windows_of_region(row: dict[str, Any], *, vcf: str, reference: str, width: int) -> list[dict[str, Any]]:
    from raycad.interpret.variants import Region, variant_windows

    return list(variant_windows(vcf, reference, width, Region(**row)))


def _no_variants(n_classes: int) -> dict[str, np.ndarray]:
    logits = np.zeros((0, n_classes), np.float32)
    return {"chrom": np.zeros(0, str), "pos": np.zeros(0, np.int64), "id": np.zeros(0, str), "ref": np.zeros(0, str),
            "alt": np.zeros(0, str), "window_start": np.zeros(0, np.int64), "edge_padded": np.zeros(0, bool),
            "ref_logits": logits, "alt_logits": logits}


def variant_table(batch: dict[str, np.ndarray], class_names: list[str]) -> pa.Table:
    """Output rows from scored alleles: probabilities (softmax of the strand-averaged logits), their difference
    and the log odds ratio ``log(p_alt / (1 - p_alt)) - log(p_ref / (1 - p_ref))``, computed from the logits in
    float64 (finite even when a probability rounds to 0 or 1)."""
    import torch

    columns: dict[str, Any] = {
        "chrom": batch["chrom"].astype(str), "pos": batch["pos"].astype(np.int64), "id": batch["id"].astype(str),
        "ref": batch["ref"].astype(str), "alt": batch["alt"].astype(str),
        "window_start": batch["window_start"].astype(np.int64), "edge_padded": batch["edge_padded"].astype(bool),
    }
    log_p, log_odds = {}, {}
    for side in ("ref", "alt"):
        logits = torch.from_numpy(np.asarray(batch[f"{side}_logits"], np.float64)).reshape(-1, len(class_names))
        log_p[side] = logits.log_softmax(-1)
        n = len(class_names)  # log(1 - p_c) = logsumexp over the other classes - logsumexp over all
        others = logits[:, None, :].expand(-1, n, -1).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        log_odds[side] = log_p[side] - (others.logsumexp(-1) - logits.logsumexp(-1, keepdim=True))
    for c, name in enumerate(class_names):
        p_ref, p_alt = log_p["ref"][:, c].exp().numpy(), log_p["alt"][:, c].exp().numpy()
        columns[f"prob_ref_{name}"] = p_ref.astype(np.float32)
        columns[f"prob_alt_{name}"] = p_alt.astype(np.float32)
        columns[f"delta_{name}"] = (p_alt - p_ref).astype(np.float32)
        columns[f"log_odds_{name}"] = (log_odds["alt"][:, c] - log_odds["ref"][:, c]).numpy().astype(np.float32)
    return pa.table(columns)


# ---- explain --------------------------------------------------------------------------------------------------


class ExplainPredictor(Predictor):
    """`Predictor` computing saturation mutagenesis and gradient x input per record (one record per call)."""

    def __init__(self, model: Any, *, target: int, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.target = target

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import torch

        from raycad.interpret.attribution import gradient_x_input, saturation_mutagenesis
        from raycad.model.tokenizer import PAD_ID

        ids, lengths, truncated = self.encode(batch)
        rows: dict[str, list] = {"id": [], "sequence": [], "truncated": [], "ism": [], "gradient": [],
                                 "grad_x_input": [], "ref_logits": []}
        for i in range(len(ids)):
            record = torch.from_numpy(self.spec.padding.crop(ids[i:i + 1], lengths[i:i + 1]).astype(np.int64))
            record = record.to(self.device)
            gradient, gxi = gradient_x_input(self.model, record, self.target)
            delta, reference = saturation_mutagenesis(self.model, record[0], batch_size=self.batch_size)
            offset = int((record[0] == PAD_ID).sum())
            rows["id"].append(str(batch["id"][i]))
            rows["sequence"].append(self.tokenizer.decode(record[0, offset:].tolist()).replace("[UNK]", "?"))
            rows["truncated"].append(bool(truncated[i]))
            rows["ism"].append(delta.cpu().numpy().ravel())
            rows["gradient"].append(gradient[0, offset:].cpu().numpy().ravel())
            rows["grad_x_input"].append(gxi[0, offset:].cpu().numpy().ravel())
            rows["ref_logits"].append(reference.cpu().numpy())
        return pa.table({name: pa.array(values) for name, values in rows.items()})


@dataclass
class ExplainReport:
    """What `explain` did: records explained, whether the input had more than the cap, files, timing."""

    records: int = 0
    capped: bool = False
    max_records: int = DEFAULT_MAX_RECORDS
    target: str = ""
    truncated: int = 0
    seconds: float = 0.0
    output_dir: str = ""
    files: list[str] = field(default_factory=list)


def explain(model_dir: str | os.PathLike, input_uri: str | list[str], output_dir: str | os.PathLike, *,
            target: str | int | None = None, max_records: int = DEFAULT_MAX_RECORDS, batch_size: int = 256,
            plots: bool = True, use_gpu: bool = False, actors: int | None = None, format: str | None = None,
            sequence_column: str | None = None, id_column: str | None = None) -> ExplainReport:
    """Saturation mutagenesis and gradient x input (both strands) for the first ``max_records`` records.

    Writes per record ``<i>_<id>.npz`` with ``ism`` ``[n, 4]`` (delta logit of ``target`` per position and base
    A, C, G, T; 0 at the reference base), ``ism_all_classes`` ``[n, 4, C]``, ``gradient`` and ``grad_x_input``
    ``[n, 4]``, ``sequence`` (the ``n`` bases the model saw, after truncation) and ``ref_logits``; with ``plots``
    a PNG heatmap beside it; and ``summary.parquet`` (one row per record). ``target``: a class name or index
    (default: the last class, the positive class of a binary task). ``batch_size``: mutants per forward pass.
    Records past ``max_records`` are not read; the report says whether there were any.
    """
    import pyarrow.parquet as pq
    import ray.data

    from raycad.data import read_sequences
    from raycad.infer.predictor import read_spec
    from raycad.infer.score import ordered, score

    spec = read_spec(model_dir)
    names = list(spec.class_names)
    target_index = class_index(target, names)
    if max_records < 1:
        raise ValueError(f"max_records must be >= 1, got {max_records}")
    start = time.perf_counter()
    # the first max_records records of the input, in input order
    records = ordered(read_sequences(input_uri, format=format, sequence_column=sequence_column,
                                     id_column=id_column, label_from="none", limit=max_records + 1)).take_all()
    report = ExplainReport(capped=len(records) > max_records, max_records=max_records, target=names[target_index],
                           output_dir=str(output_dir))
    records = records[:max_records]
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    if records:
        ds = ray.data.from_items([{"id": r["id"], "sequence": r["sequence"]} for r in records],
                                 override_num_blocks=len(records))
        scored = score(ds, model_dir, batch_size=batch_size, use_gpu=use_gpu, actors=actors,
                       predictor=ExplainPredictor, predictor_kwargs={"target": target_index}, window=1)
        for row in ordered(scored).iter_rows():
            summary.append(_write_record(row, len(summary), out_dir, names, target_index, plots, report))
    schema = pa.schema([("index", pa.int64()), ("id", pa.string()), ("length", pa.int64()), ("truncated", pa.bool_()),
                        ("file", pa.string()), ("ref_logit", pa.float64()), ("max_abs_delta", pa.float64()),
                        ("max_delta_position", pa.int64()), ("max_delta_base", pa.string())])
    pq.write_table(pa.Table.from_pylist(summary, schema=schema), out_dir / "summary.parquet")
    report.records = len(summary)
    report.seconds = time.perf_counter() - start
    return report


def _write_record(row: dict[str, Any], i: int, out_dir: Path, names: list[str], target: int, plots: bool,
                  report: ExplainReport) -> dict[str, Any]:
    """``<i>_<id>.npz`` (+ ``.png``) of one explained record; returns its summary row."""
    from raycad.interpret.attribution import BASE_LETTERS as bases
    from raycad.interpret.plots import plot_attribution

    sequence = row["sequence"]
    ism_all = np.asarray(row["ism"], np.float32).reshape(len(sequence), 4, len(names))
    ism = ism_all[:, :, target]
    grad_x_input = np.asarray(row["grad_x_input"], np.float32).reshape(-1, 4)
    stem = out_dir / f"{i:04d}_{_safe(row['id'])}"
    np.savez_compressed(stem.with_suffix(".npz"), id=row["id"], sequence=sequence, bases=bases, target=names[target],
                        class_names=names, ism=ism, ism_all_classes=ism_all, grad_x_input=grad_x_input,
                        gradient=np.asarray(row["gradient"], np.float32).reshape(-1, 4),
                        ref_logits=np.asarray(row["ref_logits"], np.float32))
    report.files.append(str(stem.with_suffix(".npz")))
    if plots:
        panels = {"ISM (delta logit)": ism, "gradient x input": grad_x_input}
        report.files.append(str(plot_attribution(stem.with_suffix(".png"), sequence, panels,
                                                 f"{row['id']}: class {names[target]}")))
    report.truncated += int(row["truncated"])
    worst = np.unravel_index(np.abs(ism).argmax(), ism.shape)
    return {"index": i, "id": row["id"], "length": len(sequence), "truncated": bool(row["truncated"]),
            "file": stem.name, "ref_logit": float(row["ref_logits"][target]), "max_abs_delta": float(np.abs(ism).max()),
            "max_delta_position": int(worst[0]), "max_delta_base": bases[worst[1]]}


def class_index(target: str | int | None, class_names: list[str]) -> int:
    """The index of ``target`` (a class name or an index; None: the last class) among ``class_names``."""
    if target is None:
        return len(class_names) - 1
    if isinstance(target, str) and target in class_names:
        return class_names.index(target)
    try:
        index = int(target)
    except ValueError:
        raise ValueError(f"unknown target class {target!r}: the model's classes are {class_names}") from None
    if not 0 <= index < len(class_names):
        raise ValueError(f"target class index {index} out of range: the model has {len(class_names)} classes")
    return index


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))[:80] or "record"
