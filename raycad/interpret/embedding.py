"""Pooled backbone embeddings of a Caduceus model, reverse-complement averaged.

A PS model's hidden state is ``[forward strand, channel-flipped RC strand]`` (``2 * d_model`` channels); the RC
half flipped in length and channels is the reverse-complement strand in its own order. Its embedding is the
mean of the two strands' pooled vectors, which makes it invariant to reverse-complementing the input (the
Caduceus paper's treatment of PS embeddings). Any other model (Ph) embeds the sequence and its reverse
complement as one batch of ``2B`` and averages the two pooled vectors (post-hoc conjoining).

Pooling is over real tokens only (``[PAD]`` masked) with the classifier's `raycad.model.modeling.pool`
("mean" by default; "max", "first", "last"). Layer ``i`` of ``layers`` is the ``i``-th entry of the backbone's
hidden states: 0 the embedding output, ``i`` the input of block ``i``, ``n_layer`` the final normed output
(the same vector as the default embedding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from raycad.model.modeling import pool

if TYPE_CHECKING:
    from raycad.model import CaduceusForSequenceClassification

POOLINGS = ("mean", "max", "first", "last")


@torch.no_grad()
def embed_ids(model: CaduceusForSequenceClassification, input_ids: Tensor, *, pooling: str = "mean",
              layers: Sequence[int] = (), rc_average: bool = True) -> dict[str, Tensor]:
    """``{"embedding": [B, d_model]}`` plus ``{"layer_<i>": [B, d_model]}`` for each ``i`` in ``layers``.

    ``rc_average=False`` skips the reverse-complement pass of a non-PS model (a PS model is always averaged:
    its two halves come from one pass).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    config, backbone = model.config, model.caduceus
    n_states = config.n_layer + 1
    bad = [i for i in layers if not 0 <= i < n_states]
    if bad:
        raise ValueError(f"layers {bad} out of range: this model has hidden states 0..{n_states - 1}")
    batch = input_ids.shape[0]
    two_pass = rc_average and not config.rcps
    ids = torch.cat([input_ids, backbone.reverse_complement(input_ids)]) if two_pass else input_ids
    final, states = backbone.backbone.forward_time_major(ids, output_hidden_states=bool(layers))
    mask = (ids != config.pad_token_id).t()                                      # [L, N]
    out = {"embedding": _pool_strands(final, mask, pooling, config.rcps, two_pass, batch)}
    for i in layers:
        out[f"layer_{i}"] = _pool_strands(states[i], mask, pooling, config.rcps, two_pass, batch)
    return out


def _pool_strands(hidden: Tensor, mask: Tensor, how: str, rcps: bool, two_pass: bool, batch: int) -> Tensor:
    """Pool time-major ``hidden`` ``[L, N, C]`` per strand and average the strands -> ``[B, d_model]`` float32."""
    hidden = hidden.float()
    if rcps:
        d = hidden.shape[-1] // 2
        return (pool(hidden[..., :d], mask, how) + pool(hidden[..., d:].flip(0, 2), mask.flip(0), how)) / 2
    if two_pass:
        return (pool(hidden[:, :batch], mask[:, :batch], how) + pool(hidden[:, batch:], mask[:, batch:], how)) / 2
    return pool(hidden, mask, how)
