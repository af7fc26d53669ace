"""Published Genomic Benchmarks test accuracies, shipped as data so reports can sit raycad's beside them.

`PUBLISHED_ACCURACY[task][model]`: top-1 test accuracy from Schiff et al. 2024 ("Caduceus", ICML 2024),
Table 1, the mean over 5 seeds (their ± is a max-min range, not a std); models there have ~470k parameters
(CNN 264k, HyenaDNA 436k, Mamba 468k), are pre-trained on hg38 at 1k length and fine-tuned 10 epochs with
batch 256, lr in {1e-3, 2e-3}. `GB_CNN` holds the Genomic Benchmarks paper's own CNN baseline (Grešová et al.
2023) as (accuracy, F1). `REPORT_MODELS` are the columns the sweep summary shows by default.
"""

from __future__ import annotations

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


def published_for(task: str | None, models: tuple[str, ...] = REPORT_MODELS) -> dict[str, float]:
    """Table 1 accuracies of ``task`` (a name or alias) for ``models``; {} for tasks outside Table 1."""
    if not task:
        return {}
    from raycad.config import ConfigError
    from raycad.data.tasks import get_task

    try:
        name = get_task(task).name
    except ConfigError:
        return {}
    row = PUBLISHED_ACCURACY.get(name, {})
    return {model: row[model] for model in models if model in row}
