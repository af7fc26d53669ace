"""What a run will read, resolved on the driver before Ray starts (`plan_data`); Ray-free and quick to import.

`raycad.data.loader.prepare_datasets` turns a `DataPlan` into Ray Datasets. Planning lists every source (a
missing file, an empty directory, a glob matching nothing fail here) and looks at the start of each file
(`raycad.data.sources.preflight`: empty files, header-only tables, missing columns, unusable labels), so bad
input is reported in well under a second instead of after Ray has started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raycad.config import FinetuneConfig
from raycad.data.tasks import get_task

BUNDLED_DEMO = Path(__file__).resolve().parent / "bundled" / "human_nontata_promoters.parquet"
DEMO_TASK = "human_nontata_promoters"
DEMO_NOTE = ("bundled demo: a stratified 80/10/10 split of the published TEST split of Genomic Benchmarks "
             "human_nontata_promoters; accuracies are not comparable to published results")


@dataclass
class DataPlan:
    """What `prepare_datasets` will read, resolved on the driver before Ray starts (`plan_data`)."""

    data: Any
    """The `DataSection` the readers use (class names filled in from the task or the file layout)."""
    plans: dict[str, Any]
    """Per split, the `raycad.data.sources.SourcePlan` of its files (empty for the demo and HealthOmics)."""
    uris: dict[str, str | None]
    class_names: list[str] | None
    source: str
    note: str = ""


def plan_data(cfg: FinetuneConfig) -> DataPlan:
    """List every source and look at the start of each file, without Ray (see the module doc)."""
    data = cfg.data
    task = get_task(data.task) if data.task else None
    if not data.train and task is None:
        if not BUNDLED_DEMO.is_file():
            raise FileNotFoundError(f"bundled demo data missing from the installed package: {BUNDLED_DEMO}")
        return DataPlan(data, {}, {}, None, f"bundled:{BUNDLED_DEMO.name}", DEMO_NOTE)

    from raycad.data.sources import plan_sources, preflight, read_options

    if data.train:
        uris = {"train": data.train, "validation": data.validation, "test": data.test}
        source = data.train
    else:  # a benchmark task from the Hugging Face hub
        data = data.model_copy(update={"format": "hf"})
        uris = {"train": task.hf_id, "validation": None, "test": task.hf_id}
        source = f"huggingface:{task.hf_id}"
    if task is not None:
        data = data.model_copy(update={"class_names": data.class_names or list(task.class_names)})
    if str(uris["train"]).startswith("healthomics://"):  # read sets, streamed by raycad.data.healthomics
        return DataPlan(data, {}, uris, data.class_names, source)
    plans = {"train": plan_sources(uris["train"], read_options(data, cfg.storage), split="train")}
    class_names = data.class_names or plans["train"].class_names
    if class_names:  # the other splits map labels exactly like train
        data = data.model_copy(update={"class_names": list(class_names)})
    for name in ("validation", "test"):
        if uris[name]:
            plans[name] = plan_sources(uris[name], read_options(data, cfg.storage), split=name)
    if "test" not in plans and task is not None and data.train:
        test_plan = _split_of(data.train, "test", read_options(data, cfg.storage))
        if test_plan is not None and not {f.path for f in test_plan.files} & {f.path for f in plans["train"].files}:
            plans["test"] = test_plan
    for plan in plans.values():
        preflight(plan)
    return DataPlan(data, plans, uris, class_names, source)


def _split_of(uri: str, split: str, options: Any) -> Any:
    """The plan of ``split`` inside a dataset directory, or None when it has no such split."""
    from raycad.data.sources import SourceError, plan_sources

    try:
        return plan_sources(uri, options, split=split)
    except SourceError:
        return None


