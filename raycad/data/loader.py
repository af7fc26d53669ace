"""From a `FinetuneConfig` to tokenized Ray Datasets (`prepare_datasets`) and to torch batches on a train
worker (`iter_batches`).

Where the sequences come from, in order of precedence:

1. ``data.train`` (a URI: local path, glob, ``s3://``, ``healthomics://``, a Hugging Face dataset directory)
   read by `raycad.data.sources.read_sequences`; ``data.validation`` / ``data.test`` likewise. With
   ``data.task`` also set, the task gives class names and ``max_length`` (a local copy of a benchmark).
2. ``data.task`` alone: the Genomic Benchmarks task's Hugging Face dataset (needs the hub).
3. Neither: the bundled demo, a stratified 80/10/10 split of the published *test* split of
   human_nontata_promoters (so its numbers are not comparable to published results).

Without a test source (a user's single labelled file), a seeded stratified ``data.test_fraction`` of train
becomes the test split; without a validation source, validation is a seeded stratified ``data.val_fraction``
split of the rest. `raycad.data.splits` writes each split's record ids to the run directory.
Everything stays lazy: the driver runs at most small aggregations (label cut-offs for the split, the
longest sequence when no ``max_length`` is known, and `PreparedData.report`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.data.collate_fn import NumpyBatchCollateFn

from raycad.config import ConfigError, FinetuneConfig
from raycad.data import preprocess, records
from raycad.data.batching import PaddingRule
from raycad.data.plan import BUNDLED_DEMO, DEMO_TASK, DataPlan, plan_data
from raycad.data.tasks import TaskInfo, get_task
from raycad.model.tokenizer import reverse_complement_ids
from raycad.runtime import get_logger

if TYPE_CHECKING:
    import ray.data
    import torch

log = get_logger("raycad.data")
SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    """Tokenized, lazy Ray Datasets per split plus what the model and the reports need to know."""

    datasets: dict[str, ray.data.Dataset]
    """"train", "validation" and (when there is test data) "test": rows ``input_ids`` (uint8 [max_length],
    left-padded), ``label`` (int64) and ``key`` (uint64, drives the seeded augmentation)."""
    class_names: list[str]
    max_length: int
    source: str
    """Where the data came from, in words."""
    task: TaskInfo | None = None
    note: str = ""
    tokenized: dict[str, ray.data.Dataset] = field(default_factory=dict, repr=False)
    """Per split, the tokenized records with their `preprocess.STATS_COLUMNS`: what `report` counts."""
    skips: dict[str, Any] = field(default_factory=dict, repr=False)
    """Per split, the `raycad.data.sources.SkipCounter` of the records the readers dropped (bad_records=skip):
    the one count of skipped records, and of RNA records read as DNA."""
    classes_declared: bool = True
    """Whether the class names were given (config, task, file layout) rather than inferred from label ids."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def report(self) -> dict[str, Any]:
        """Records per split, skipped records by reason, truncated records, invalid characters and RNA records.

        Executes one counting pass over all splits. Skipped and RNA records are counted where they were read:
        a validation split carved from the training data reports them under ``train``.
        """
        names = list(self.tokenized)
        tagged = [ds.map_batches(preprocess.summarize, batch_format="pyarrow", fn_kwargs={"split": name})
                  for name, ds in self.tokenized.items()]
        rows = tagged[0].union(*tagged[1:]).take_all() if tagged else []  # one pass over every split
        splits: dict[str, Any] = {}
        for name in names:
            # The readers' skip counts are complete once the pass above has run.
            read_skips = self.skips[name].report() if name in self.skips else None
            splits[name] = {"records": 0, "skipped": dict(read_skips.by_reason) if read_skips else {},
                            "truncated": 0, "invalid_characters": 0, "records_with_invalid": 0,
                            "rna_records": read_skips.rna_records if read_skips else 0,
                            "bases": 0, "labels": {},
                            "skipped_examples": list(read_skips.examples) if read_skips else []}
        for row in rows:
            entry = splits[row["split"]]
            entry["records"] += int(row["records"])
            entry["truncated"] += int(row["truncated"])
            label = int(row["label"])
            entry["labels"][label] = entry["labels"].get(label, 0) + int(row["records"])
            entry["invalid_characters"] += int(row["invalid_characters"])
            entry["records_with_invalid"] += int(row["records_with_invalid"])
            entry["bases"] += int(row["bases"])
        for entry in splits.values():
            entry["labels"] = dict(sorted(entry["labels"].items()))
        return {"source": self.source, "note": self.note, "class_names": list(self.class_names),
                "max_length": self.max_length, "splits": splits}

    def check(self, report: dict[str, Any]) -> None:
        """Refuse data that would train a wrong model without an error (`raycad.data.records`): a single
        class, a stray label id, a split that is mostly not DNA. Notes RNA read as DNA."""
        splits = report["splits"]
        for name, entry in splits.items():
            records.check_invalid_fraction(name, entry["invalid_characters"], entry["bases"], self.source)
        records.check_label_counts(splits["train"]["labels"], self.class_names, f"{self.source} [train]",
                                   declared=self.classes_declared)
        rna = sum(entry["rna_records"] for entry in splits.values())
        if rna:
            log.warning("%d record(s) hold U: read as RNA, with U as T", rna)


# ---- prepare -----------------------------------------------------------------------------------------------------
def prepare_datasets(cfg: FinetuneConfig, plan: DataPlan | None = None) -> PreparedData:
    """Resolve the data sources of ``cfg.data``, split, tokenize; returns lazy datasets (see module doc).

    ``plan``: the `plan_data` of ``cfg`` when the caller already made it (before starting Ray).
    """
    data = cfg.data
    task = get_task(data.task) if data.task else None
    raw, source_classes, skips, source, note = _read_sources(cfg, plan or plan_data(cfg))
    known = task or (get_task(DEMO_TASK) if source.startswith("bundled:") else None)
    declared = data.class_names or (known.class_names if known else None) or source_classes
    class_names = list(declared or _infer_class_names(raw, source))
    if task and data.class_names and len(data.class_names) != task.num_classes:
        raise ConfigError(f"data.class_names has {len(data.class_names)} names but task {task.name} has "
                          f"{task.num_classes} classes {list(task.class_names)}")

    keyed = {name: ds.map_batches(preprocess.add_keys, batch_format="pyarrow") for name, ds in raw.items()}
    if "test" not in keyed and data.test_fraction > 0:  # a single labelled source: hold out a test split
        keyed["train"], keyed["test"] = preprocess.split_train_validation(
            keyed["train"], data.test_fraction, cfg.train.seed, len(class_names))
    if "validation" not in keyed:
        if data.val_fraction <= 0:
            raise ConfigError("no validation data: set data.validation or data.val_fraction > 0")
        keyed["train"], keyed["validation"] = preprocess.split_train_validation(
            keyed["train"], data.val_fraction, cfg.train.seed, len(class_names))
    if data.limit:
        keyed = {name: ds.limit(data.limit) for name, ds in keyed.items()}

    max_length = data.max_length or (known.max_length if known else None) or _default_max_length(keyed, cfg)
    tokenized = {
        name: ds.map_batches(preprocess.tokenize_batch, batch_format="pyarrow",
                             fn_kwargs={"max_length": max_length, "truncation": data.truncation})
        for name, ds in keyed.items()
    }
    datasets = {name: preprocess.model_columns(tokenized[name]) for name in SPLITS if name in tokenized}
    return PreparedData(datasets=datasets, class_names=class_names, max_length=int(max_length), source=source,
                        task=task, note=note, tokenized={n: tokenized[n] for n in datasets}, skips=skips,
                        classes_declared=bool(declared))


def _read_sources(cfg: FinetuneConfig, plan: DataPlan) -> tuple[dict[str, Any], list[str] | None,
                                                                 dict[str, Any], str, str]:
    """Raw datasets per split (``sequence``, ``label``, ``id``), class names the sources imply (file layout),
    a skip counter per split for records the readers drop, a description and a note."""
    from raycad.data.sources import (
        SkipCounter,
        dataset_from_plan,
        read_bundled_demo,
        read_options,
        read_sequences,
    )

    if plan.source.startswith("bundled:"):
        opts = read_options(plan.data, class_names=get_task(DEMO_TASK).class_names)
        skips = {name: SkipCounter() for name in SPLITS}
        raw = {name: read_bundled_demo(BUNDLED_DEMO, name, opts, skips[name]) for name in SPLITS}
        return raw, None, skips, plan.source, plan.note
    if not plan.plans:  # HealthOmics read sets
        skips = {name: SkipCounter() for name, uri in plan.uris.items() if uri}
        raw = {name: read_sequences(plan.uris[name], plan.data, split=name, storage=cfg.storage, skips=skips[name])
               for name in skips}
        return raw, plan.class_names, skips, plan.source, ""
    skips = {name: SkipCounter() for name in plan.plans}
    raw = {name: dataset_from_plan(p, skips=skips[name]) for name, p in plan.plans.items()}
    return raw, plan.class_names, skips, plan.source, ""


def _infer_class_names(raw: dict[str, Any], source: str) -> list[str]:
    """Class names "0".."k" from the integer labels of the train split (one aggregation pass)."""
    return records.infer_class_names(raw["train"].max("label"), source)


def _default_max_length(keyed: dict[str, Any], cfg: FinetuneConfig) -> int:
    """``max_length`` of a user's data: a high percentile of record lengths within the model's trained length
    (`raycad.data.records.default_max_length`); the truncated records are counted in the data report."""
    lengths = np.concatenate([np.zeros(0, np.int64)] + [  # an empty block may come without the column
        np.asarray(batch.get("length", ()), dtype=np.int64) for ds in keyed.values()
        for batch in ds.map_batches(preprocess.longest_sequence, batch_format="pyarrow").iter_batches(
            batch_format="numpy", batch_size=None)])
    trained = records.trained_length(cfg.model.pretrained or cfg.model.preset)
    cap, truncated = records.default_max_length(lengths, trained)
    if cap <= 0:
        raise records.RecordError(f"{cfg.data.train}: the data holds no sequences (every record is empty)",
                                  "empty_sequence")
    log.info("max_length %d: the %g%% percentile of %d record lengths (longest %d%s); %d record(s) will be "
             "truncated (set data.max_length to choose)", cap, records.MAX_LENGTH_PERCENTILE, len(lengths),
             int(lengths.max(initial=0)), f", model trained at {trained}" if trained else "", truncated)
    return cap


# ---- batches -----------------------------------------------------------------------------------------------------
class BatchCollator(NumpyBatchCollateFn):
    """Numpy rows -> ``{"input_ids": LongTensor [B, L] or [B, L, 2], "labels": LongTensor [B]}`` (no
    ``labels`` for rows without a ``label`` column).

    Args:
        rc_prob: probability of reverse-complementing each record (padding stays on the left); the choice
            is a pure function of the record's ``key`` and ``salt``, so it does not depend on batch order.
        salt: integers mixed into the choice, e.g. (seed, epoch, seed_offset).
        conjoin: stack [forward, reverse complement] as the last axis.
        padding, pad_multiple: the `raycad.data.batching.PaddingRule` mode and multiple; "longest" drops
            the leading columns that the batch's longest record (rounded up to ``pad_multiple``) does not need.
    """

    def __init__(self, rc_prob: float = 0.0, salt: tuple[int, ...] = (0,), conjoin: bool = False,
                 padding: str = "max_length", pad_multiple: int = 1) -> None:
        super().__init__()
        self.rc_prob = float(rc_prob)
        self.salt = tuple(int(s) for s in salt)
        self.conjoin = conjoin
        self.padding, self.pad_multiple = padding, int(pad_multiple)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        import torch

        ids = np.asarray(batch["input_ids"], dtype=np.int64)
        if ids.size:
            ids = PaddingRule(ids.shape[1], self.padding, self.pad_multiple).crop(ids)
        if self.rc_prob > 0 and len(ids):
            flip = preprocess.uniform_from_keys(batch["key"], *self.salt) < self.rc_prob
            if flip.any():
                ids[flip] = reverse_complement_ids(ids[flip], padding_side="left")
        if self.conjoin:
            ids = preprocess.conjoin(ids)
        out = {"input_ids": torch.from_numpy(np.ascontiguousarray(ids))}
        if "label" in batch:
            out["labels"] = torch.from_numpy(np.array(batch["label"], dtype=np.int64))
        return out


def make_collator(cfg: FinetuneConfig, split: str, epoch: int, seed_offset: int = 0) -> BatchCollator:
    """The collator a split gets: RC augmentation on train only; conjoined per ``head.conjoin_*``."""
    train = split == "train"
    return BatchCollator(
        rc_prob=cfg.data.rc_augment if train else 0.0,
        salt=(cfg.train.seed, epoch, seed_offset, 0xA11),
        conjoin=cfg.head.conjoin_train if train else cfg.head.conjoin_eval,
        padding=cfg.data.padding,
        pad_multiple=cfg.data.pad_multiple,
    )


SHUFFLE_BUFFER_TOKENS = 64 << 20
"""Token budget (uint8 ids: bytes) of a worker's training shuffle buffer (`shuffle_buffer_rows`)."""


def shuffle_buffer_rows(shard_rows: int, tokens_per_row: int, batch_rows: int) -> int:
    """Rows of a worker's training shuffle buffer: its whole shard when that fits `SHUFFLE_BUFFER_TOKENS` (a
    full reshuffle every epoch, as a sampler over a map-style dataset gives), else as many rows as fit, and
    never fewer than four batches."""
    fits = SHUFFLE_BUFFER_TOKENS // max(1, tokens_per_row)
    return max(4 * batch_rows, min(shard_rows, fits))


def iter_batches(shard: Any, cfg: FinetuneConfig, split: str, batch_size: int, epoch: int,
                 seed_offset: int = 0, device: Any = None,
                 collate_fn: BatchCollator | None = None,
                 rows_are_batches: bool = False,
                 shuffle_rows: int | None = None, rank: int = 0,
                 world: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Torch batches from a worker's dataset shard (``ray.train.get_dataset_shard(split)``) or a Dataset.

    The train split is shuffled through a local buffer of ``shuffle_rows`` rows (`shuffle_buffer_rows`;
    default: 4 batches, at least 1,024 rows) and reverse-complement augmented, both seeded by
    ``(cfg.train.seed, epoch, seed_offset)``; other splits come in order, unaugmented. ``device=None``
    lets Ray pick the worker's device. ``collate_fn`` replaces the split's `make_collator` (pre-training
    passes its masking collator). With ``rows_are_batches`` (length-bucketed training data, not split across
    workers) see `iter_global_batches`: ``batch_size`` must be 1.
    """
    train = split == "train"
    collate_fn = collate_fn or make_collator(cfg, split, epoch, seed_offset)
    if rows_are_batches:
        if batch_size != 1:
            raise ValueError(f"bucketed rows are whole batches: read them one at a time, not {batch_size}")
        seed = int(preprocess.seed_mix(cfg.train.seed, epoch, 0x5F1) % (1 << 31)) if train else None
        yield from iter_global_batches(shard, collate_fn, seed=seed, shuffle_rows=shuffle_rows or 256, rank=rank,
                                       world=world, device=device)
        return
    shuffle = {}
    if train:
        salt = int(preprocess.seed_mix(cfg.train.seed, epoch, seed_offset, 0x5F1) % (1 << 31))
        shuffle = {"local_shuffle_buffer_size": shuffle_rows or max(4 * batch_size, 1024),
                   "local_shuffle_seed": salt}
    yield from shard.iter_torch_batches(
        batch_size=batch_size,
        collate_fn=collate_fn,
        device=device if device is not None else "auto",
        **shuffle,
    )


GLOBAL_BATCH_MASK = (1 << 62) - 1
"""The bits of the XOR of a global batch's keys that `iter_global_batches` passes on (a positive int64)."""


def iter_global_batches(dataset: Any, collate_fn: BatchCollator, *, seed: int | None, shuffle_rows: int,
                        rank: int, world: int, device: Any = None) -> Iterator[dict[str, Any]]:
    """Rank ``rank``'s part of every global batch of a length-bucketed Dataset (one row per batch, read whole by
    every rank; `raycad.data.batching.bucket_dataset`): rows in the Dataset's order, shuffled by `shuffled_rows`
    with ``seed`` (None: not shuffled), each collated and cut to its records ``[rank::world]``. Every rank
    computes the same sequence, so all take the same steps on batches of the same width; ``"global_batch"``
    (the XOR of the batch's keys, `GLOBAL_BATCH_MASK` bits) lets the train loop check that. A batch of fewer
    than ``world`` records cannot give every rank one: it is left out on every rank, and rank 0 logs how many
    records that was."""
    import torch

    from raycad.data.batching import shuffled_rows

    rows = iter(dataset.iter_rows())
    if seed is not None:
        rows = shuffled_rows(rows, shuffle_rows, seed)
    target = None if device is None or device == "auto" else torch.device(device)
    left_out = 0
    for row in rows:
        keys = np.asarray(row["key"], dtype=np.uint64)
        if len(keys) < world:
            left_out += len(keys)
            continue
        # collated whole (cropped to the global batch's width), then sliced: every rank gets the same width
        whole = collate_fn({name: np.asarray(row[name]) for name in ("input_ids", "label", "key")})
        batch = {k: v[rank::world].contiguous().to(target or v.device) for k, v in whole.items()}
        batch["global_batch"] = int(np.bitwise_xor.reduce(keys) & np.uint64(GLOBAL_BATCH_MASK))
        yield batch
    if left_out and rank == 0:
        log.warning("%d training record(s) in batches of fewer records than the %d workers were left out of this "
                    "epoch", left_out, world)
