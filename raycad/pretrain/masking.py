"""The masked-LM corruption of the Caduceus paper (BERT's recipe), and the collator that applies it.

Of the maskable positions of a window (bases; never special tokens or [PAD]) each is chosen as a prediction
target with probability ``probability`` (15%). A chosen position is replaced by [MASK] with probability
``mask_token`` (80%), by a uniformly random base A/C/G/T with probability ``random_token`` (10%; it may draw
the original base), and otherwise left unchanged. Labels hold the original token at chosen positions and
``IGNORE_INDEX`` everywhere else, so the loss (`raycad.pretrain.loss`) counts the chosen positions only.

Every decision is a pure function of the window's 64-bit ``key``, the position and a salt (seed, epoch,
...), computed with the splitmix64 hash of `raycad.data.preprocess`: a window gets the same masks whatever
batch, worker or order it arrives in, so a resumed run sees exactly the masks it would have seen, and the
held-out windows are masked identically at every evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raycad.data.loader import BatchCollator
from raycad.data.preprocess import seed_mix, splitmix64
from raycad.model.tokenizer import A_ID, MASK_ID, N_ID, T_ID

IGNORE_INDEX = -100
"""Label of the positions the loss ignores (``torch.nn.functional.cross_entropy``'s default)."""
RANDOM_BASES = np.arange(A_ID, T_ID + 1)
"""Replacement tokens of the "random base" case: A, C, G, T."""

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def maskable(input_ids: np.ndarray, mask_n: bool = True) -> np.ndarray:
    """Positions that may become targets: bases (A/C/G/T, and N when ``mask_n``); specials and [PAD] never."""
    return (input_ids >= A_ID) & (input_ids <= (N_ID if mask_n else T_ID))


def _uniform(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> _U64(11)) * (1.0 / (1 << 53))


def position_hashes(keys: np.ndarray, length: int, *salt: int) -> np.ndarray:
    """uint64 [B, length]: a well-mixed hash of (window key, position, salt)."""
    base = np.asarray(keys, dtype=_U64) ^ seed_mix(*salt)
    with np.errstate(over="ignore"):
        grid = base[:, None] + (np.arange(1, length + 1, dtype=_U64) * _GOLDEN)[None, :]
    return splitmix64(grid)


def mask_tokens(input_ids: np.ndarray, keys: np.ndarray, *salt: int, probability: float = 0.15,
                mask_token: float = 0.8, random_token: float = 0.1,
                mask_n: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``input_ids`` [B, L] for masked-LM training; returns ``(inputs, labels)`` (int64 [B, L]).

    ``keys`` [B] (uint64) and ``salt`` make the choice deterministic (see the module docstring).
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {ids.shape}")
    length = ids.shape[1]
    chosen = maskable(ids, mask_n) & (_uniform(position_hashes(keys, length, *salt, 1)) < probability)
    how = _uniform(position_hashes(keys, length, *salt, 2))
    to_mask = chosen & (how < mask_token)
    to_random = chosen & (how >= mask_token) & (how < mask_token + random_token)
    inputs = ids.copy()
    inputs[to_mask] = MASK_ID
    if to_random.any():
        draws = (position_hashes(keys, length, *salt, 3) >> _U64(62)).astype(np.int64)  # top 2 bits: 0..3
        inputs[to_random] = RANDOM_BASES[draws[to_random]]
    labels = np.where(chosen, ids, IGNORE_INDEX)
    return inputs, labels


class MLMCollator(BatchCollator):
    """Window rows (``input_ids``, ``key``) -> ``{"input_ids", "labels"}`` LongTensors [B, L]: reverse-complement
    augmentation (`BatchCollator`) first, then `mask_tokens` with ``mlm`` (a `MaskingSection`) and ``salt``."""

    def __init__(self, mlm: Any, rc_prob: float = 0.0, salt: tuple[int, ...] = (0,)) -> None:
        super().__init__(rc_prob=rc_prob, salt=salt)
        self.mlm = mlm

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        ids = super().__call__(batch)["input_ids"].numpy()
        inputs, labels = mask_tokens(ids, batch["key"], *self.salt, 0x3A5C, probability=self.mlm.probability,
                                     mask_token=self.mlm.mask_token, random_token=self.mlm.random_token,
                                     mask_n=self.mlm.mask_n)
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}
