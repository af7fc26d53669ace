"""Registry of the Genomic Benchmarks classification tasks (Grešová et al. 2023) used with Caduceus.

Facts per task: the benchmark's name and short aliases, the class names (the benchmark's per-class file
names; label ids follow their sorted order, as in the Hugging Face copies), the published train/test
sizes, sequence lengths, the ``max_length`` the Caduceus paper fine-tuned with, the Hugging Face dataset
id (columns ``seq``, ``label``), and published top-1 test accuracies for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    published_accuracy: dict[str, float] = field(default_factory=dict)
    """Top-1 test accuracy: Caduceus paper Table 1 (mean of 5 seeds) and Genomic Benchmarks' CNN."""
    max_length_source: str = "paper"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def hf_id(self) -> str:
        return HF_PREFIX + self.name


def _acc(ps: float | None, ph: float | None, cnn: float) -> dict[str, float]:
    out = {"Caduceus-PS": ps, "Caduceus-Ph": ph, "GB CNN": cnn}
    return {k: v for k, v in out.items() if v is not None}


_BINARY = ("negative", "positive")

TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("dummy_mouse_enhancers_ensembl", ("mouse_enhancers", "mouse"), _BINARY,
             968, 242, 1024, "331-4776", _acc(0.793, 0.754, 0.690)),
    TaskInfo("demo_coding_vs_intergenomic_seqs", ("coding_vs_intergenomic", "coding"),
             ("coding_seqs", "intergenomic_seqs"), 75_000, 25_000, 200, "200", _acc(0.910, 0.915, 0.876)),
    TaskInfo("demo_human_or_worm", ("human_or_worm", "worm"), ("human", "worm"),
             75_000, 25_000, 200, "200", _acc(0.968, 0.973, 0.930)),
    TaskInfo("human_enhancers_cohn", ("enhancers_cohn", "cohn"), _BINARY,
             20_843, 6_948, 500, "500", _acc(0.745, 0.747, 0.695)),
    TaskInfo("human_enhancers_ensembl", ("enhancers_ensembl", "enhancers"), _BINARY,
             123_872, 30_970, 512, "2-573", _acc(0.900, 0.893, 0.689)),
    TaskInfo("human_ensembl_regulatory", ("ensembl_regulatory", "regulatory"), ("enhancer", "ocr", "promoter"),
             231_348, 57_713, 512, "71-802", _acc(0.873, 0.872, 0.933)),
    TaskInfo("human_ocr_ensembl", ("ocr_ensembl", "ocr"), _BINARY,
             139_804, 34_952, 512, "71-593", _acc(0.818, 0.828, 0.680)),
    TaskInfo("human_nontata_promoters", ("nontata_promoters", "nontata"), _BINARY,
             27_097, 9_034, 251, "251", _acc(0.945, 0.946, 0.846)),
    TaskInfo("drosophila_enhancers_stark", ("drosophila_enhancers", "drosophila"), _BINARY,
             5_184, 1_730, 3072, "258-3061", _acc(None, None, 0.586),
             max_length_source="longest sequence (not in the Caduceus paper)"),
)}

_BY_ALIAS = {alias: t for t in TASKS.values() for alias in (t.name, *t.aliases)}


def get_task(name_or_alias: str) -> TaskInfo:
    """The task by its name, alias or HF id (case-insensitive, ``-`` = ``_``); unknown -> `ConfigError`."""
    key = name_or_alias.strip().lower().replace("-", "_")
    key = key.removeprefix(HF_PREFIX.lower())
    if key in _BY_ALIAS:
        return _BY_ALIAS[key]
    names = ", ".join(f"{t.name} ({'/'.join(t.aliases)})" for t in TASKS.values())
    raise ConfigError(f"unknown Genomic Benchmarks task {name_or_alias!r}; known: {names}")
