"""Heatmaps of per-base attributions (positions x bases) with the reference sequence along the axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raycad.interpret.attribution import BASE_LETTERS

LETTER_LIMIT = 300
"""Up to this many positions every reference base is printed on the x axis; beyond, ticks every few bases."""


def plot_attribution(path: str | Path, sequence: str, panels: dict[str, np.ndarray], title: str) -> Path:
    """One PNG: a heatmap ``[4 bases x n positions]`` per panel (name -> ``[n, 4]``), diverging colours centred
    on zero, the reference base of each position marked with a dot and written under the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(sequence)
    for name, values in panels.items():
        if values.shape != (n, 4):
            raise ValueError(f"panel {name!r}: expected [{n}, 4] for a {n}-base sequence, got {list(values.shape)}")
    width = float(np.clip(n * 0.09, 8, 40))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 1.6 * len(panels) + 0.8), squeeze=False)
    ref_rows = np.array([BASE_LETTERS.find(b) for b in sequence])
    real = np.flatnonzero(ref_rows >= 0)
    for ax, (name, values) in zip(axes[:, 0], panels.items()):
        limit = float(np.nanmax(np.abs(values))) or 1.0
        image = ax.imshow(values.T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.scatter(real, ref_rows[real], s=4 if n > 100 else 10, c="k", marker=".", linewidths=0)
        ax.set_yticks(range(4), list(BASE_LETTERS))
        ax.set_ylabel(name)
        fig.colorbar(image, ax=ax, pad=0.01, fraction=0.02)
        if n <= LETTER_LIMIT:
            ax.set_xticks(range(n), list(sequence), fontsize=max(4.0, min(9.0, 900 / max(n, 1))), family="monospace")
        else:
            step = int(10 ** np.ceil(np.log10(n / 20)))
            ax.set_xticks(range(0, n, step))
    axes[-1, 0].set_xlabel("position (reference base)" if n <= LETTER_LIMIT else "position")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
