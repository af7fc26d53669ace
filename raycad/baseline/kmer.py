"""k-mer counting on token ids, as sparse matrices (the baseline's features).

`kmer_counts(ids, k)` counts, per record, every window of ``k`` consecutive bases of a left-padded token-id
matrix (the rows the model trains on, so the baseline sees exactly the same, equally truncated, records).
A k-mer is its base-4 number (A=0, C=1, G=2, T=3, first base most significant): column ``j`` of the result
counts the k-mer whose number is ``j``. Windows that overlap a non-ACGT token (N, [UNK]) are not counted, and
their number is returned, so nothing is dropped silently; padding is not sequence and is never counted.

With ``canonical=True`` a k-mer and its reverse complement share one column (the lexicographically smaller
of the two, in `canonical_kmers` order): counts then do not depend on the strand a sequence was read from,
the k-mer analogue of Caduceus' reverse-complement equivariance.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from raycad.model.tokenizer import A_ID, C_ID, G_ID, N_ID, T_ID, UNK_ID

_CODE = np.full(256, -1, dtype=np.int64)    # token id -> 0..3 for ACGT, -1 for padding / specials
_CODE[[A_ID, C_ID, G_ID, T_ID]] = [0, 1, 2, 3]
_AMBIGUOUS = np.zeros(256, dtype=bool)      # token ids that are sequence but not a base: N, [UNK]
_AMBIGUOUS[[N_ID, UNK_ID]] = True


def kmer_index(codes: np.ndarray, k: int) -> np.ndarray:
    """Base-4 number of each length-``k`` window of ``codes`` (0..3) along the last axis."""
    width = codes.shape[-1] - k + 1
    index = np.zeros(codes.shape[:-1] + (max(width, 0),), dtype=np.int64)
    for i in range(k):
        index = index * 4 + codes[..., i:i + width]
    return index


def reverse_complement_index(index: np.ndarray, k: int) -> np.ndarray:
    """Base-4 number of the reverse complement of each k-mer number in ``index``."""
    out = np.zeros_like(index)
    rest = index.copy()
    for _ in range(k):
        out = out * 4 + (3 - rest % 4)
        rest //= 4
    return out


@lru_cache(maxsize=16)
def canonical_kmers(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(column of every k-mer number under RC-canonical counting, the canonical k-mer number of each column)."""
    every = np.arange(4 ** k, dtype=np.int64)
    canon = np.minimum(every, reverse_complement_index(every, k))
    kept, column = np.unique(canon, return_inverse=True)
    return column, kept


def num_features(k: int, canonical: bool = False) -> int:
    return len(canonical_kmers(k)[1]) if canonical else 4 ** k


def kmer_counts(ids: np.ndarray, k: int, canonical: bool = False) -> tuple[sp.csr_matrix, int]:
    """Per-record k-mer counts of token ids ``ids`` [records, length]: (counts [records, features], windows
    skipped because they overlap N / [UNK])."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"token ids must be a [records, length] matrix, got shape {ids.shape}")
    n, length = ids.shape
    features = num_features(k, canonical)
    if length < k or n == 0:
        return sp.csr_matrix((n, features), dtype=np.float64), 0
    codes = _CODE[ids]
    index = kmer_index(np.maximum(codes, 0), k)
    windows = np.lib.stride_tricks.sliding_window_view
    invalid = windows(codes < 0, k, axis=1).any(axis=2)
    padding = windows((codes < 0) & ~_AMBIGUOUS[ids], k, axis=1).any(axis=2)
    ambiguous = invalid & ~padding  # inside the sequence, overlapping N / [UNK]
    if canonical:
        index = canonical_kmers(k)[0][index]
    rows = np.broadcast_to(np.arange(n)[:, None], index.shape)[~invalid]
    counts = sp.coo_matrix((np.ones(len(rows)), (rows, index[~invalid])), shape=(n, features)).tocsr()
    counts.sum_duplicates()
    return counts, int(ambiguous.sum())
