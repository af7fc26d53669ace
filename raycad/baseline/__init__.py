"""The k-mer baseline: logistic regression on k-mer counts, on the same records and metrics as the model.

- `kmer_counts(ids, k, canonical=False)`: sparse per-record k-mer counts of token-id rows (`raycad.baseline.kmer`).
- `fit_kmer_baseline(records, num_classes, cfg)`: (k, C) chosen on validation, scored on validation and test.
- `baseline_step(cfg, data)`: the step ``raycad finetune`` and ``raycad tune`` run beside the model.
- `run_baseline(cfg)`: prepare the data and fit (``raycad baseline TASK_OR_URI``).
"""

from raycad.baseline.fit import baseline_step, describe, fit_kmer_baseline, run_baseline
from raycad.baseline.kmer import canonical_kmers, kmer_counts, num_features

__all__ = ["baseline_step", "canonical_kmers", "describe", "fit_kmer_baseline", "kmer_counts", "num_features",
           "run_baseline"]
