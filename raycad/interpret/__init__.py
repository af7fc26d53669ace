"""raycad.interpret: what users do with a fine-tuned Caduceus after the test accuracy.

Three verbs, each a CLI command and a Python function that runs on Ray Data (CPU or GPU actors that load
the exported model once):

- `embed` (``raycad embed MODEL INPUT -o OUT.parquet``): pooled backbone embeddings per record (mean over
  real tokens by default, optionally every layer), reverse-complement averaged (PS: the two channel halves;
  Ph: the sequence and its reverse complement), ids kept, streamed to one Parquet file.
- `explain` (``raycad explain MODEL INPUT -o DIR``): in-silico saturation mutagenesis (every position x
  every other base, batched; delta logit of one class) and gradient x input, both strands, per record a
  ``.npz`` matrix and a PNG heatmap with the reference sequence, plus ``summary.parquet``.
- `score_variants` (``raycad score-variants MODEL --vcf V.vcf.gz --reference REF.fa -o OUT.parquet``): per
  VCF allele, the ``max_length`` window centred on it (ref and re-centred alt sequence), per-class
  probabilities of both, their difference and log-odds ratio, averaged over strands; bad records counted,
  listed with their reason in ``<OUT>.skipped.tsv``.

The model math (strand averaging, pooling, mutagenesis, gradients) lives in `raycad.interpret.attribution`
and `raycad.interpret.embedding` and works on any in-memory classifier; VCF/FASTA windowing in
`raycad.interpret.variants`; heatmaps in `raycad.interpret.plots`; the pipelines, `raycad.infer.Predictor`
subclasses run by `raycad.infer.score`, in `raycad.interpret.pipelines`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "embed": "raycad.interpret.pipelines",
    "explain": "raycad.interpret.pipelines",
    "score_variants": "raycad.interpret.pipelines",
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
