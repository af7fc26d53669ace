"""Registry of the Genomic Benchmarks classification tasks (Grešová et al. 2023) used with Caduceus, their
published accuracies, and how a CLI's ``TASK_OR_URI`` argument resolves (`resolve_task_or_uri`).

Facts per task: the benchmark's name and short aliases, the class names (the benchmark's per-class file
names; label ids follow their sorted order, as in the Hugging Face copies), the published train/test
sizes, sequence lengths, the ``max_length`` the Caduceus paper fine-tuned with, the Hugging Face dataset
id (columns ``seq``, ``label``).

Published numbers, shipped as data so reports sit raycad's beside them: `PUBLISHED_ACCURACY[task][model]`,
top-1 test accuracy from Schiff et al. 2024 ("Caduceus", ICML 2024), Table 1, the mean over 5 seeds (their
± is a max-min range, not a std); models there have ~470k parameters (CNN 264k, HyenaDNA 436k, Mamba 468k),
are pre-trained on hg38 at 1k length and fine-tuned 10 epochs with batch 256, lr in {1e-3, 2e-3}. `GB_CNN`
holds the Genomic Benchmarks paper's own CNN baseline (Grešová et al. 2023) as (accuracy, F1).
`REPORT_MODELS` are the columns the sweep summary shows by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from raycad.config import ConfigError

HF_PREFIX = "katarinagresova/Genomic_Benchmarks_"


@dataclass(frozen=True)
class TaskInfo:
    """One Genomic Benchmarks task."""

    name: str
    aliases: tuple[str, ...]
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    max_length: int
    """Token length to fine-tune with: the Caduceus paper's value (see `max_length_source`)."""
    seq_length: str
    """Published sequence lengths, e.g. "251" or "71-802"."""
    max_length_source: str = "paper"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def hf_id(self) -> str:
        return HF_PREFIX + self.name

    @property
    def published_accuracy(self) -> dict[str, float]:
        """Top-1 test accuracy: Caduceus paper Table 1 (mean of 5 seeds) and Genomic Benchmarks' CNN."""
        row = PUBLISHED_ACCURACY.get(self.name, {})
        out = {"Caduceus-PS": row.get("Caduceus-PS"), "Caduceus-Ph": row.get("Caduceus-Ph"),
               "GB CNN": GB_CNN[self.name][0] if self.name in GB_CNN else None}
        return {k: v for k, v in out.items() if v is not None}


_BINARY = ("negative", "positive")

TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("dummy_mouse_enhancers_ensembl", ("mouse_enhancers", "mouse"), _BINARY,
             968, 242, 1024, "331-4776"),
    TaskInfo("demo_coding_vs_intergenomic_seqs", ("coding_vs_intergenomic", "coding"),
             ("coding_seqs", "intergenomic_seqs"), 75_000, 25_000, 200, "200"),
    TaskInfo("demo_human_or_worm", ("human_or_worm", "worm"), ("human", "worm"),
             75_000, 25_000, 200, "200"),
    TaskInfo("human_enhancers_cohn", ("enhancers_cohn", "cohn"), _BINARY,
             20_843, 6_948, 500, "500"),
    TaskInfo("human_enhancers_ensembl", ("enhancers_ensembl", "enhancers"), _BINARY,
             123_872, 30_970, 512, "2-573"),
    TaskInfo("human_ensembl_regulatory", ("ensembl_regulatory", "regulatory"), ("enhancer", "ocr", "promoter"),
             231_348, 57_713, 512, "71-802"),
    TaskInfo("human_ocr_ensembl", ("ocr_ensembl", "ocr"), _BINARY,
             139_804, 34_952, 512, "71-593"),
    TaskInfo("human_nontata_promoters", ("nontata_promoters", "nontata"), _BINARY,
             27_097, 9_034, 251, "251"),
    TaskInfo("drosophila_enhancers_stark", ("drosophila_enhancers", "drosophila"), _BINARY,
             5_184, 1_730, 3072, "258-3061", max_length_source="longest sequence (not in the Caduceus paper)"),
)}

SOURCE = "Schiff et al. 2024 (Caduceus, ICML), Table 1: Genomic Benchmarks top-1 test accuracy"

PROTOCOL = ("5-fold cross-validation on the training split (a random seed per fold), scored on the test split; "
            "mean and max - min over the 5 runs; best of a small lr x batch-size grid")
"""How Table 1 was measured (Schiff et al. 2024, Genomic Benchmarks section), for reports that sit beside it."""

MODELS = ("CNN", "HyenaDNA", "Mamba", "Caduceus w/o equiv", "Caduceus-Ph", "Caduceus-PS")
REPORT_MODELS = ("CNN", "HyenaDNA", "Caduceus-Ph", "Caduceus-PS")

_TABLE_1 = {
    # task: CNN, HyenaDNA, Mamba, Caduceus w/o equiv, Caduceus-Ph, Caduceus-PS
    "dummy_mouse_enhancers_ensembl": (0.715, 0.780, 0.743, 0.770, 0.754, 0.793),
    "demo_coding_vs_intergenomic_seqs": (0.892, 0.904, 0.904, 0.908, 0.915, 0.910),
    "demo_human_or_worm": (0.942, 0.964, 0.967, 0.970, 0.973, 0.968),
    "human_enhancers_cohn": (0.702, 0.729, 0.732, 0.741, 0.747, 0.745),
    "human_enhancers_ensembl": (0.744, 0.849, 0.862, 0.883, 0.893, 0.900),
    "human_ensembl_regulatory": (0.872, 0.869, 0.814, 0.871, 0.872, 0.873),
    "human_ocr_ensembl": (0.698, 0.783, 0.815, 0.818, 0.828, 0.818),
    "human_nontata_promoters": (0.861, 0.944, 0.933, 0.933, 0.946, 0.945),
}

PUBLISHED_ACCURACY: dict[str, dict[str, float]] = {
    task: dict(zip(MODELS, values)) for task, values in _TABLE_1.items()
}

GB_CNN: dict[str, tuple[float, float]] = {
    # Genomic Benchmarks repository experiments table: (accuracy, F1) of its PyTorch CNN.
    "demo_coding_vs_intergenomic_seqs": (0.876, 0.868),
    "demo_human_or_worm": (0.930, 0.928),
    "dummy_mouse_enhancers_ensembl": (0.690, 0.704),
    "human_enhancers_cohn": (0.695, 0.671),
    "human_enhancers_ensembl": (0.689, 0.565),
    "human_ensembl_regulatory": (0.933, 0.933),
    "human_nontata_promoters": (0.846, 0.837),
    "human_ocr_ensembl": (0.680, 0.661),
    "drosophila_enhancers_stark": (0.586, 0.445),
}


_BY_ALIAS = {alias: t for t in TASKS.values() for alias in (t.name, *t.aliases)}


def get_task(name_or_alias: str) -> TaskInfo:
    """The task by its name, alias or HF id (case-insensitive, ``-`` = ``_``); unknown -> `ConfigError`."""
    key = name_or_alias.strip().lower().replace("-", "_")
    key = key.removeprefix(HF_PREFIX.lower())
    if key in _BY_ALIAS:
        return _BY_ALIAS[key]
    names = ", ".join(f"{t.name} ({'/'.join(t.aliases)})" for t in TASKS.values())
    raise ConfigError(f"unknown Genomic Benchmarks task {name_or_alias!r}; known: {names}")


def published_for(task: str | None, models: tuple[str, ...] = REPORT_MODELS) -> dict[str, float]:
    """Table 1 accuracies of ``task`` (a name or alias) for ``models``; {} for tasks outside Table 1."""
    if not task:
        return {}
    try:
        name = get_task(task).name
    except ConfigError:
        return {}
    row = PUBLISHED_ACCURACY.get(name, {})
    return {model: row[model] for model in models if model in row}


def resolve_task_or_uri(arg: str | None) -> dict[str, str]:
    """A CLI's ``TASK_OR_URI`` as config fields: ``{"data.task": name}`` for a known task name or alias,
    ``{"data.train": arg}`` for anything else (a data URI), ``{}`` for None (the bundled demo)."""
    if not arg:
        return {}
    try:
        return {"data.task": get_task(arg).name}
    except ConfigError:
        return {"data.train": arg}
