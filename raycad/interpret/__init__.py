"""raycad.interpret: what users do with a fine-tuned Caduceus after the test accuracy.

The building blocks of three verbs to come (``raycad embed``, ``raycad explain``, ``raycad score-variants``):
pooled, reverse-complement-averaged embeddings; in-silico saturation mutagenesis and gradient x input on
both strands; and reference/alternative windows for VCF variants.

The model math (strand averaging, pooling, mutagenesis, gradients) lives in `raycad.interpret.attribution`
and `raycad.interpret.embedding` and works on any in-memory classifier; VCF/FASTA windowing in
`raycad.interpret.variants`; heatmaps in `raycad.interpret.plots`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "embed_ids": "raycad.interpret.embedding",
    "strand_logits": "raycad.interpret.attribution",
    "saturation_mutagenesis": "raycad.interpret.attribution",
    "gradient_x_input": "raycad.interpret.attribution",
    "variant_windows": "raycad.interpret.variants",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
