"""Batch inference on Ray Data: `score` a dataset, `predict` a file to a table, `evaluate` labelled data.

All three run the model in `raycad.infer.Predictor` actors (``Dataset.map_batches`` over an actor pool; one
GPU per actor with ``use_gpu``), never in the driver. The driver only streams the small results: `predict`
writes them to a Parquet/CSV file in input order with a row number, `evaluate` sums them into metrics.
Memory stays bounded by Ray Data's streaming executor (a few blocks in flight per operator), so the input
can be larger than RAM.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raycad.runtime import get_logger

if TYPE_CHECKING:
    import ray.data

log = get_logger("raycad.infer")

WINDOW_ROWS = 1024
"""Rows per actor call: the window that is sorted by length and cut into model batches."""
DATA_CPU_RESERVE = 1.0
"""CPUs left to Ray Data's read tasks (each asks for 1 CPU) when CPU actors would fill the cluster."""


@dataclass(frozen=True)
class Placement:
    """How many actors run the model and what each gets."""

    actors: int
    cpus: float
    gpus: float
    threads: int


def placement(use_gpu: bool = False, actors: int | None = None, cluster: dict[str, float] | None = None) -> Placement:
    """Actors for the cluster: one per GPU with ``use_gpu``; else one per CPU with a single torch thread
    each, sharing all but `DATA_CPU_RESERVE` CPUs (so reads still get scheduled on a small machine)."""
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    cpus = float(cluster.get("CPU", 1.0))
    if use_gpu:
        gpus = int(cluster.get("GPU", 0))
        if gpus < 1:
            raise RuntimeError("use_gpu is set but the Ray cluster has no GPU")
        n = actors or gpus
        return Placement(n, min(1.0, max(cpus - DATA_CPU_RESERVE, 0.0) / n), 1.0, 1)
    n = actors or max(1, int(cpus))
    share = math.floor(100 * max(cpus - DATA_CPU_RESERVE, 0.0) / n) / 100  # 0 on a 1-CPU cluster
    return Placement(n, min(share, 1.0), 0.0, max(1, round(cpus / n)) if actors else 1)


def score(ds: ray.data.Dataset, model: str | os.PathLike | Any, *, batch_size: int = 128,
          use_gpu: bool = False, actors: int | None = None, predictor: type | None = None,
          predictor_kwargs: dict[str, Any] | None = None, window: int = WINDOW_ROWS) -> ray.data.Dataset:
    """``ds`` (rows with ``sequence`` or ``input_ids``) mapped through ``predictor`` actors (default
    `raycad.infer.Predictor`): lazy, one output row per input row (see `Predictor.columns`)."""
    from raycad.infer.predictor import Predictor

    where = placement(use_gpu, actors)
    kwargs = {"batch_size": batch_size, "device": "cuda" if use_gpu else "cpu", "threads": where.threads,
              **(predictor_kwargs or {})}
    return ds.map_batches(predictor or Predictor, fn_constructor_args=(_portable(model),),
                          fn_constructor_kwargs=kwargs, batch_size=window, batch_format="numpy",
                          concurrency=where.actors, num_cpus=where.cpus, num_gpus=where.gpus or None)


def _portable(model: Any) -> Any:
    """A local path as an absolute string (actors may run elsewhere on a shared filesystem); a
    ``ray.train.Checkpoint`` or URI as it is."""
    if not hasattr(model, "as_directory") and isinstance(model, (str, os.PathLike)) and "://" not in str(model):
        return os.path.abspath(model)
    return model


def ordered(ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds``, set to keep the input order of its rows when it runs. A Dataset runs with the copy of the
    `DataContext` it was created with, so the flag goes on that copy: changing the driver's current context
    after the dataset exists does not reach it."""
    ds.context.execution_options.preserve_order = True
    return ds


# ---- predict -----------------------------------------------------------------------------------------------------


@dataclass
class PredictSummary:
    """What `predict` wrote."""

    output: str
    records: int
    truncated: int
    max_length: int
    truncation: str
    predicted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        text = (f"{self.records} records -> {self.output} in {self.seconds:.1f} s "
                f"({self.records / max(self.seconds, 1e-9):.0f} records/s); predicted: {self.predicted}")
        if self.truncated:
            text += (f"\n{self.truncated} record(s) longer than the model's max_length {self.max_length} were cut "
                     f"(truncation={self.truncation}); the 'truncated' column marks them")
        return text


def predict(model: str | os.PathLike, input: str | os.PathLike | list[str], output: str | os.PathLike, *,
            batch_size: int = 128, use_gpu: bool = False, actors: int | None = None, format: str | None = None,
            sequence_column: str | None = None, id_column: str | None = None, s3_endpoint: str | None = None,
            s3_region: str | None = None, progress: bool = False, address: str | None = None) -> PredictSummary:
    """Class probabilities of every record of ``input`` (anything `raycad.data.read_sequences` reads),
    written to ``output`` (.parquet/.csv/.tsv) in input order: ``row, id, predicted_label, prob_<class>...,
    truncated``. ``row`` is the 0-based position in the input (files in path order), so records with the
    same id stay distinguishable."""
    import numpy as np
    import pyarrow as pa

    from raycad.data.sources import dataset_from_plan, plan_sources, preflight, read_sequences
    from raycad.infer.output import TableWriter, output_format
    from raycad.infer.predictor import load_for_inference
    from raycad.runtime import init_ray

    # Everything that can be checked without Ray fails here, in one line naming the file: the output name,
    # the model (its weights load once here), the input files and the start of each.
    output_format(output)
    _, spec = load_for_inference(model)
    options = {k: v for k, v in {"format": format, "sequence_column": sequence_column, "id_column": id_column,
                                  "s3_endpoint": s3_endpoint, "s3_region": s3_region}.items() if v is not None}
    options.update(label_from="none", invalid_chars="n" if spec.invalid_chars == "n" else "unk")
    start = time.perf_counter()
    if isinstance(input, str) and input.startswith("healthomics://"):
        init_ray(address)
        ds = read_sequences(input, **options)
    else:
        plan = plan_sources(input, **options)
        preflight(plan)
        init_ray(address)
        ds = dataset_from_plan(plan)
    ds = ds.drop_columns(["label"])
    scored = score(ds, model, batch_size=batch_size, use_gpu=use_gpu, actors=actors)
    names = list(spec.class_names)
    counts = np.zeros(len(names), dtype=np.int64)
    truncated = 0
    last = time.perf_counter()
    with TableWriter(output, s3_endpoint=s3_endpoint, s3_region=s3_region) as writer:
        for table in ordered(scored).iter_batches(batch_format="pyarrow", batch_size=None):
            probs = np.stack([table.column(f"prob_{n}").to_numpy() for n in names], axis=1)
            counts += np.bincount(probs.argmax(1), minlength=len(names)) if len(probs) else 0
            truncated += int(np.count_nonzero(table.column("truncated").to_numpy(zero_copy_only=False)))
            writer.write(table)
            if progress and time.perf_counter() - last > 10:
                last = time.perf_counter()
                log.info("predict: %d records scored (%.0f/s)", writer.rows, writer.rows / (last - start))
        if writer.rows == 0:
            empty = {"id": pa.array([], pa.string()), "predicted_label": pa.array([], pa.string()),
                     **{f"prob_{n}": pa.array([], pa.float32()) for n in names},
                     "truncated": pa.array([], pa.bool_())}
            writer.write(pa.table(empty))
        records = writer.rows
    return PredictSummary(output=str(output), records=records, truncated=truncated, max_length=spec.max_length,
                          truncation=spec.truncation, predicted=dict(zip(names, counts.tolist())),
                          seconds=time.perf_counter() - start)


# ---- evaluate ----------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Metrics of one split (keys prefixed, e.g. ``test_accuracy``) and where the model ran."""

    metrics: dict[str, Any]
    processes: list[int]
    device: str
    seconds: float

    def info(self) -> dict[str, Any]:
        return {"actor_processes": self.processes, "device": self.device, "seconds": self.seconds}


def evaluate(ds: ray.data.Dataset, model: str | os.PathLike | Any, num_classes: int, *, prefix: str = "test_",
             batch_size: int = 128, use_gpu: bool = False, actors: int | None = None) -> Evaluation:
    """Metrics of ``model`` on labelled rows (``label`` plus ``sequence`` or ``input_ids``), scored by
    `Predictor` actors; the driver only sums their probabilities into a `raycad.train.metrics.EvalAccumulator`."""
    import numpy as np
    import torch

    from raycad.train.metrics import EvalAccumulator

    start = time.perf_counter()
    scored = score(ds, model, batch_size=batch_size, use_gpu=use_gpu, actors=actors,
                   predictor_kwargs={"report_process": True})
    acc = EvalAccumulator(num_classes)
    processes: set[int] = set()
    names: list[str] | None = None
    for batch in scored.iter_batches(batch_format="numpy", batch_size=None):
        if names is None:
            names = [k for k in batch if k.startswith("prob_")]
        probs = torch.from_numpy(np.stack([batch[n] for n in names], axis=1).astype(np.float64))
        labels = torch.tensor(batch["label"], dtype=torch.int64)  # a copy: Ray hands read-only arrays
        acc.update(probs.clamp_min(1e-45).log(), labels)
        processes.update(int(p) for p in np.unique(batch["process"]))
    seconds = time.perf_counter() - start
    metrics = acc.compute(prefix=prefix)
    metrics[f"{prefix}eval_time_s"] = seconds
    return Evaluation(metrics, sorted(processes), "cuda" if use_gpu else "cpu", seconds)

