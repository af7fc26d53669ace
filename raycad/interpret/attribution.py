"""Attribution on a Caduceus classifier: strand-averaged logits, in-silico mutagenesis, gradient x input.

Everything here works on token ids ``[B, L]`` laid out as in training (left padding with [PAD]) and on any
`raycad.model.CaduceusForSequenceClassification` in memory; the Ray pipelines call these functions.

Both strands: a score is always the mean of the logits of a sequence and of its reverse complement. A PS
model (``rcps``) is reverse-complement invariant by construction, so one pass gives it; a Ph model that
conjoins in eval mode does the two passes itself; any other model gets ``[ids; rc(ids)]`` as one batch of
``2B`` and the two halves' logits averaged (the classifier's post-hoc conjoining, applied whatever its
config says).

Gradient x input treats the input as a one-hot matrix ``X`` ``[L, V]`` whose embedding is ``X @ T`` (``T`` the
embedding table, ``[W, flip(W[complement])]`` for PS). The gradient of a logit with respect to ``X[l, v]`` is
then ``<dlogit/demb[l], T[v]>``, exact by the chain rule; the reverse-complement pass contributes at the
mirrored position and complementary base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from raycad.model.tokenizer import A_ID, C_ID, G_ID, PAD_ID, T_ID

if TYPE_CHECKING:
    from raycad.model import CaduceusForSequenceClassification

BASE_IDS = (A_ID, C_ID, G_ID, T_ID)
"""Token ids of the four bases, in the column order of every per-base matrix here (A, C, G, T)."""
BASE_LETTERS = "ACGT"


def _single_pass(model: CaduceusForSequenceClassification) -> bool:
    """True when one forward call already averages both strands (PS, or a Ph model conjoining now)."""
    return bool(model.config.rcps or model._conjoin())


def strand_logits(model: CaduceusForSequenceClassification, input_ids: Tensor) -> Tensor:
    """Float32 logits ``[B, C]`` of ``input_ids`` ``[B, L]``, averaged over the sequence and its reverse complement."""
    if _single_pass(model):
        return model(input_ids).logits.float()
    both = torch.cat([input_ids, model.caduceus.reverse_complement(input_ids)])
    return model(both).logits.float().view(2, input_ids.shape[0], -1).mean(0)


@torch.no_grad()
def saturation_mutagenesis(model: CaduceusForSequenceClassification, input_ids: Tensor, *,
                           batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Every single-base substitution of one record: ``(delta [n, 4, C], reference logits [C])``.

    ``input_ids`` ``[L]`` is one tokenized record (left padding allowed); ``n`` is its number of real tokens.
    ``delta[p, b, c]`` = strand-averaged logit ``c`` with base ``BASE_IDS[b]`` at real position ``p`` minus the
    reference's; zero where ``b`` is the reference base. Mutants run ``batch_size`` at a time.
    """
    if input_ids.dim() != 1:
        raise ValueError(f"saturation_mutagenesis takes one record [L], got {list(input_ids.shape)}")
    offset = int((input_ids == PAD_ID).sum())  # left padding: real tokens are input_ids[offset:]
    n = input_ids.shape[0] - offset
    bases = torch.tensor(BASE_IDS, device=input_ids.device)
    real = input_ids[offset:]
    is_alt = real[:, None] != bases[None, :]                                  # [n, 4]
    positions, columns = is_alt.nonzero(as_tuple=True)
    reference = strand_logits(model, input_ids[None])[0]
    delta = torch.zeros(n, len(BASE_IDS), reference.shape[-1], device=reference.device)
    for start in range(0, len(positions), batch_size):
        pos, col = positions[start:start + batch_size], columns[start:start + batch_size]
        mutants = input_ids.repeat(len(pos), 1)
        mutants[torch.arange(len(pos)), offset + pos] = bases[col].to(input_ids.dtype)
        delta[pos, col] = strand_logits(model, mutants) - reference
    return delta, reference


def gradient_x_input(model: CaduceusForSequenceClassification, input_ids: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """Gradients of the strand-averaged logit ``target`` w.r.t. the one-hot input: ``(gradient, gradient x input)``.

    Both ``[B, L, 4]`` over the bases A, C, G, T (zeros at padding); gradient x input keeps only each
    position's own base (a row of zeros where the base is N or [UNK]). The records of a batch are
    independent, so one backward pass serves them all. Model parameters receive no gradient.
    """
    embeddings = model.caduceus.backbone.embeddings
    captured: list[Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_()
        captured.append(leaf)
        return leaf

    handle = embeddings.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = strand_logits(model, input_ids)
            (grad_emb,) = torch.autograd.grad(logits[:, target].sum(), captured)  # [L, N, C], time-major
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one embedding call per forward pass, saw {len(captured)}")
    with torch.no_grad():
        vocab = torch.arange(model.config.vocab_size, device=input_ids.device)
        table = embeddings(vocab).float()                                      # [V, C]
        per_token = torch.einsum("lnc,vc->lnv", grad_emb.float(), table)       # d logit / d onehot[l, n, v]
        batch = input_ids.shape[0]
        if per_token.shape[1] == 2 * batch:  # [fwd; rc] passes: the rc pass maps back mirrored and complemented
            per_token = per_token[:, :batch] + per_token[:, batch:].flip(0)[..., model.caduceus.complement]
        gradient = per_token.transpose(0, 1)[..., list(BASE_IDS)]              # [B, L, 4]
        gradient = gradient.masked_fill((input_ids == PAD_ID)[..., None], 0.0)
        onehot = (input_ids[..., None] == torch.tensor(BASE_IDS, device=input_ids.device)).float()
    return gradient, gradient * onehot
