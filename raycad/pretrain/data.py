"""From a `PretrainConfig` to lazy Ray Datasets of training and held-out windows (`prepare_pretrain_data`).

Sources are read by `raycad.data.sources.read_sequences` exactly as for fine-tuning (FASTA/FASTQ/BAM,
CSV/TSV/Parquet; local paths, globs, ``s3://``, ``healthomics://``) but without labels; with no URI the
bundled demo's *training* split is used (sequences only: its validation and test records are never read).
Records stream through `raycad.pretrain.windows.window_batch` (a ``map_batches`` generator), so a genome
never has to fit in memory, only one record (one chromosome) of it at a time.

Held-out windows: the windows of ``data.validation`` files when given; else those of the records named in
``data.holdout`` (contigs); else a seeded ``data.val_fraction`` of all windows. `PretrainData.counts` comes
from one counting pass over the sources (records, bases, windows, mostly-N windows dropped, held-out and
training windows), which the step budget needs anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raycad.config import ConfigError, PretrainConfig
from raycad.pretrain.windows import COUNT_COLUMNS, count_windows, window_batch, window_options

if TYPE_CHECKING:
    import ray.data

MATERIALIZE_MAX_TOKENS = 512 << 20
"""Windows up to this many tokens in all (uint8: bytes) are shuffled once and kept in the object store."""


@dataclass
class PretrainData:
    """Lazy window datasets ``train`` / ``validation`` (rows ``input_ids`` uint8 [max_length], ``key``)."""

    datasets: dict[str, ray.data.Dataset]
    counts: dict[str, dict[str, int]]
    """Per source ("train", and "validation" for held-out files): the `count_windows` totals."""
    source: str
    max_length: int
    skips: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_train(self) -> int:
        return self.counts["train"]["train"]

    @property
    def num_validation(self) -> int:
        if "validation" in self.counts:
            return self.counts["validation"]["train"]
        return self.counts["train"]["heldout"]

    def report(self) -> dict[str, Any]:
        skipped = {name: counter.report().to_dict() for name, counter in self.skips.items()}
        return {"source": self.source, "max_length": self.max_length, "counts": self.counts,
                "train_windows": self.num_train, "validation_windows": self.num_validation,
                "skipped_records": skipped}


def read_unlabelled(uris: list[str], cfg: PretrainConfig, skips: Any = None) -> ray.data.Dataset:
    """Sequences (``sequence``, ``id``) of ``uris`` read with the config's source options, labels ignored."""
    from raycad.data.sources import read_sequences

    return read_sequences(uris if len(uris) > 1 else uris[0], cfg.data, label_from="none", skips=skips,
                          storage=cfg.storage)


def _bundled_train_split(cfg: PretrainConfig, skips: Any) -> ray.data.Dataset:
    from raycad.data.plan import BUNDLED_DEMO
    from raycad.data.sources import read_bundled_demo, read_options

    if not BUNDLED_DEMO.is_file():
        raise FileNotFoundError(f"bundled demo data missing from the installed package: {BUNDLED_DEMO}")
    train = read_bundled_demo(BUNDLED_DEMO, "train", read_options(cfg.data, label_from="none"), skips)
    return train.limit(cfg.data.limit) if cfg.data.limit else train


def _count(ds: ray.data.Dataset, options: dict[str, Any]) -> dict[str, int]:
    counted = ds.map_batches(count_windows, batch_format="pyarrow", fn_kwargs=options)
    totals = {name: 0 for name in COUNT_COLUMNS}
    for batch in counted.iter_batches(batch_format="numpy", batch_size=None):
        for name in COUNT_COLUMNS:
            totals[name] += int(batch[name].sum())
    return totals


def _windows(ds: ray.data.Dataset, options: dict[str, Any]) -> ray.data.Dataset:
    return ds.map_batches(window_batch, batch_format="pyarrow", fn_kwargs=options)


def prepare_pretrain_data(cfg: PretrainConfig, *, count: bool = True) -> PretrainData:
    """Lazy training / held-out window datasets for ``cfg`` and their counts (one pass; ``count=False`` skips
    it and leaves `PretrainData.counts` empty)."""
    from ray.data.expressions import col

    from raycad.data.sources import SkipCounter

    data = cfg.data
    skips: dict[str, Any] = {"train": SkipCounter()}
    if data.train:
        raw = read_unlabelled(data.train, cfg, skips["train"])
        source = ", ".join(data.train)
    else:
        raw = _bundled_train_split(cfg, skips["train"])
        source = "bundled demo: training split of human_nontata_promoters (sequences only)"
    options = window_options(data, cfg.train.seed, heldout=not data.validation)
    windows = _windows(raw, options)
    if data.validation:
        skips["validation"] = SkipCounter()
        raw_val = read_unlabelled(data.validation, cfg, skips["validation"])
        val_options = window_options(data, cfg.train.seed, heldout=False)
        train = windows.drop_columns(["heldout"])
        validation = _windows(raw_val, val_options).drop_columns(["heldout"])
    else:
        if not data.holdout and data.val_fraction <= 0:
            raise ConfigError("no held-out windows: set data.validation, data.holdout or data.val_fraction > 0")
        train = windows.filter(expr=col("heldout") == False).drop_columns(["heldout"])
        validation = windows.filter(expr=col("heldout") == True).drop_columns(["heldout"])
    counts: dict[str, dict[str, int]] = {}
    if count:
        counts["train"] = _count(raw, options)
        if data.validation:
            counts["validation"] = _count(raw_val, val_options)
    prepared = PretrainData({"train": train, "validation": validation}, counts, source, data.max_length, skips)
    if count:
        if prepared.num_train < cfg.scaling.num_workers:
            raise ConfigError(f"{prepared.num_train} training windows cannot be split across "
                              f"{cfg.scaling.num_workers} workers (source: {source})")
        if prepared.num_validation < cfg.scaling.num_workers:
            raise ConfigError(f"{prepared.num_validation} held-out windows cannot be split across "
                              f"{cfg.scaling.num_workers} workers: hold out more (data.val_fraction, "
                              f"data.holdout or data.validation)")
    return prepared
