"""Selective scan (the S6 recurrence of Mamba) in pure PyTorch, with mamba_ssm's calling convention.

For every batch row ``b``, channel ``d`` and state index ``n``::

    delta'  = softplus(delta + delta_bias)            (softplus only when delta_softplus)
    x[t]    = exp(delta'[t] * A) * x[t-1] + delta'[t] * B[t] * u[t]
    y[t]    = sum_n C[t] * x[t] + D * u[t]
    out[t]  = y[t] * silu(z[t])                       (gating only when z is given)

Shapes (as in ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``): ``u``, ``delta``, ``z``
``[batch, dim, length]``; ``A`` ``[dim, dstate]`` (real); ``B`` and ``C`` either ``[batch, dstate, length]``
(input dependent), ``[batch, groups, dstate, length]`` (grouped) or ``[dim, dstate]`` (constant); ``D`` and
``delta_bias`` ``[dim]``. Computation is float32 (float64 for float64 inputs, e.g. for gradcheck); the output
has ``u``'s dtype and the last state the computation dtype.

`selective_scan_reference` is the plain sequential loop. `selective_scan` is the fast path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from raycad.model.kernels import fused_kernels
from raycad.runtime import get_logger

__all__ = ["scan_path", "selective_scan", "selective_scan_chunked", "selective_scan_reference"]

LOG2_E = 1.0 / math.log(2.0)


def _per_step(M: Tensor, batch: int, dim: int) -> Tensor:
    """B or C as a ``[batch, dim, dstate, length]``-broadcastable tensor (constant, variable or grouped)."""
    if M.dim() == 2:  # [d, n], constant over batch and time
        return M[None, :, :, None]
    if M.dim() == 3:  # [b, n, l], shared by all channels
        return M[:, None, :, :]
    if M.dim() == 4:  # [b, g, n, l], channels split into g equal groups
        groups = M.shape[1]
        if dim % groups:
            raise ValueError(f"dim {dim} is not divisible by the number of B/C groups {groups}")
        return M.repeat_interleave(dim // groups, dim=1)
    raise ValueError(f"B/C must have 2, 3 or 4 dimensions, got shape {tuple(M.shape)}")


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be [batch, dim, length]; got {tuple(u.shape)}, "
                         f"{tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(f"A must be [dim, dstate] with dim={u.shape[1]}; got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; raycad's scan is real-valued")
    for name, M in (("B", B), ("C", C)):
        if M.dim() == 2 and M.shape != A.shape:
            raise ValueError(f"constant {name} must be [dim, dstate]={tuple(A.shape)}; got {tuple(M.shape)}")
        if M.dim() in (3, 4) and (M.shape[0] != u.shape[0] or M.shape[-1] != u.shape[2]
                                  or M.shape[-2] != A.shape[1]):
            raise ValueError(f"{name} must be [batch, (groups,) dstate, length]; got {tuple(M.shape)} for "
                             f"u {tuple(u.shape)} and A {tuple(A.shape)}")


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The selective scan as a plain loop over time (slow; differentiable through autograd).

    Returns ``out`` ``[batch, dim, length]`` in ``u``'s dtype, and with ``return_last_state`` also the final
    state ``[batch, dim, dstate]`` (float32).
    """
    _check_shapes(u, delta, A, B, C)
    dtype_in, ct = u.dtype, _compute_dtype(u)
    batch, dim, length = u.shape
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bt = _per_step(B.to(ct), batch, dim)
    Ct = _per_step(C.to(ct), batch, dim)
    x = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        B_t = Bt[..., min(t, Bt.shape[-1] - 1)]
        C_t = Ct[..., min(t, Ct.shape[-1] - 1)]
        x = torch.exp(delta[:, :, t, None] * A) * x + (delta[:, :, t] * u[:, :, t])[..., None] * B_t
        ys.append((x * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(ct)[:, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    out = y.to(dtype_in)
    return (out, x) if return_last_state else out


# --------------------------------------------------------------------------------------------------------
# Fast pure-PyTorch scan: chunked over time, hand-written backward.
#
# Internally everything is time-major and the d channels are split into the g groups of B/C (g = 1 unless B
# or C is grouped), h = d // g channels each. A state is [b, g, n, h]: h innermost, so the contractions with
# B/C are contiguous batched GEMVs and sums over the state index are vector adds. u and delta' are
# [l, b, d] (= [l, b, g, h]), A is [g, n, h], input-dependent B/C are [l, b, g, n], constant ones [g, n, h].
# Time is cut into chunks of T steps. For a chunk the per-step factors exp(delta' A) and delta' u B are
# computed for all T steps at once into small, cache-resident [T, b, g, n, h] buffers, then the recurrence
# runs one in-place step at a time. Only the state entering each chunk is kept for backward, which
# recomputes a chunk's states from it and runs the adjoint recurrence in reverse:
#     G[t] = dL/dx[t] = C[t] dy[t] + exp(delta'[t+1] A) G[t+1].
# Every exponent is a single delta' A (never a difference of cumulative sums), so nothing can overflow for
# A <= 0, however large delta' is.
# --------------------------------------------------------------------------------------------------------


def _outer(w: Tensor, M: Tensor, out: Tensor) -> Tensor:
    """``out[t, b, g, n, h] = w[t, b, (g, h)] * M[t, b, g, n]`` (``M[g, n, h]`` when constant)."""
    T, b, g, _, h = out.shape
    return torch.mul(w.view(T, b, g, 1, h), M if M.dim() == 3 else M[..., None], out=out)


def _contract(X: Tensor, M: Tensor, out: Tensor) -> Tensor:
    """``out[t, b, (g, h)] = sum_n X[t, b, g, n, h] * M[t, b, g, n]`` (``M[g, n, h]`` when constant)."""
    T, b, g, n, h = X.shape
    if M.dim() == 3:
        return torch.sum(X * M, dim=3, out=out.view(T, b, g, h))
    torch.bmm(M.view(T * b * g, 1, n), X.view(T * b * g, n, h), out=out.view(T * b * g, 1, h))
    return out


def _reduce_into(grad: Tensor, X: Tensor, w: Tensor, s: int, e: int) -> None:
    """Gradient of `_outer`/`_contract` w.r.t. B or C for time steps ``s:e``:
    ``sum_h w[t, b, (g, h)] * X[t, b, g, n, h]``, written into ``grad[s:e]`` (input-dependent ``[l, b, g, n]``)
    or summed over t and b into ``grad`` (constant ``[g, n, h]``)."""
    T, b, g, n, h = X.shape
    if grad.dim() == 3:
        grad += torch.einsum("tbgh,tbgnh->gnh", w.view(T, b, g, h), X)
    else:
        torch.bmm(w.reshape(T * b * g, 1, h), X.view(T * b * g, n, h).transpose(1, 2),
                  out=grad[s:e].view(T * b * g, 1, n))


def _chunk_of(M: Tensor, s: int, e: int) -> Tensor:
    return M if M.dim() == 3 else M[s:e]


def _chunk_states(dlt: Tensor, u: Tensor, A2: Tensor, B: Tensor, x0: Tensor, dA: Tensor, X: Tensor) -> None:
    """Fill ``dA`` with exp(delta' A) = exp2(delta' A log2(e)) (``A2 = A log2(e)``; exp2 is several times
    faster than exp on CPU) and ``X`` with the states of one chunk that starts from state ``x0``."""
    T, b, g, _, h = X.shape
    torch.mul(dlt.view(T, b, g, 1, h), A2, out=dA).exp2_()
    _outer(dlt * u, B, out=X)
    X[0].addcmul_(dA[0], x0)
    for t in range(1, T):
        X[t].addcmul_(dA[t], X[t - 1])


class _SelectiveScanFn(torch.autograd.Function):
    """The chunked scan on internal-layout tensors; returns y [l, b, d] (no D, no gate) and the last state."""

    @staticmethod
    def forward(ctx, u: Tensor, dlt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int, save: bool):
        length, batch, dim = u.shape
        groups, dstate, head = A.shape
        T = min(chunk, length)
        starts = range(0, length, T)
        y = u.new_empty(length, batch, dim)
        dA = u.new_empty(T, batch, groups, dstate, head)
        X = [torch.empty_like(dA), torch.empty_like(dA)]  # alternate, so the previous last state stays valid
        entry = u.new_empty(len(starts), batch, groups, dstate, head) if save else None
        x = u.new_zeros(batch, groups, dstate, head)
        A2 = A * LOG2_E
        for k, s in enumerate(starts):
            e = min(s + T, length)
            if save:
                entry[k] = x
            X_c = X[k % 2][: e - s]
            _chunk_states(dlt[s:e], u[s:e], A2, _chunk_of(B, s, e), x, dA[: e - s], X_c)
            _contract(X_c, _chunk_of(C, s, e), out=y[s:e])
            x = X_c[-1]
        if save:
            ctx.save_for_backward(u, dlt, A, B, C, entry)
            ctx.chunk = T
        return y, x.clone()

    @staticmethod
    def backward(ctx, gy: Tensor, glast: Tensor | None):
        u, dlt, A, B, C, entry = ctx.saved_tensors
        T = ctx.chunk
        length, batch, dim = u.shape
        groups, dstate, head = A.shape
        gy = gy.contiguous()
        gu, gdlt = torch.empty_like(u), torch.empty_like(dlt)
        gA = torch.zeros_like(A)
        gB = torch.zeros_like(B) if B.dim() == 3 else torch.empty_like(B)
        gC = torch.zeros_like(C) if C.dim() == 3 else torch.empty_like(C)
        dA = u.new_empty(T, batch, groups, dstate, head)
        X, G = torch.empty_like(dA), torch.empty_like(dA)
        gw = u.new_empty(T, batch, dim)
        carry = glast if glast is not None else u.new_zeros(batch, groups, dstate, head)
        A2 = A * LOG2_E
        for k in reversed(range(len(entry))):
            s = k * T
            e = min(s + T, length)
            n_t = e - s
            d_c, u_c, gy_c = dlt[s:e], u[s:e], gy[s:e]
            B_c, C_c = _chunk_of(B, s, e), _chunk_of(C, s, e)
            dA_c, X_c, G_c, gw_c = dA[:n_t], X[:n_t], G[:n_t], gw[:n_t]
            _chunk_states(d_c, u_c, A2, B_c, entry[k], dA_c, X_c)
            # Adjoint recurrence, G[t] = dL/dx[t]; `carry` is exp(delta'[e] A) G[e] from the next chunk.
            _outer(gy_c, C_c, out=G_c)
            G_c[-1] += carry
            for t in range(n_t - 2, -1, -1):
                G_c[t].addcmul_(dA_c[t + 1], G_c[t + 1])
            carry = dA_c[0] * G_c[0]
            _reduce_into(gC, X_c, gy_c, s, e)
            # Q[t] = G[t] dA[t] x[t-1] = dL/d(delta'[t] A), built in dA's buffer; X's buffer becomes scratch.
            Q = dA_c.mul_(G_c)
            Q[1:].mul_(X_c[:-1])
            Q[0].mul_(entry[k])
            torch.sum(torch.mul(Q, A, out=X_c), dim=3, out=gdlt[s:e].view(n_t, batch, groups, head))
            gA += torch.mul(Q, d_c.view(n_t, batch, groups, 1, head), out=X_c).sum((0, 1))
            # Through the input term delta'[t] u[t] B[t]: w = delta' u, dL/dw = sum_n G B.
            _contract(G_c, B_c, out=gw_c)
            _reduce_into(gB, G_c, d_c * u_c, s, e)
            torch.mul(gw_c, d_c, out=gu[s:e])
            gdlt[s:e].addcmul_(gw_c, u_c)
        return gu, gdlt, gA, gB, gC, None, None


def _default_chunk(batch: int, dim: int, dstate: int, length: int) -> int:
    """Steps per chunk: [T, b, d, n] float32 buffers of about 4 MiB (cache-resident), but long enough that
    the chunk-entry states kept for backward (length / T states) stay under 256 MiB; 4 to 64 steps."""
    state = batch * dim * dstate
    cache_fit = (1 << 20) // max(1, state)
    memory_cap = math.ceil(length * state * 4 / (256 << 20))
    return int(max(4, min(64, max(cache_fit, memory_cap))))


def _internal_bc(M: Tensor, groups: int, ct: torch.dtype) -> Tensor:
    """B/C in the internal layout: [l, b, g, n] when input dependent, [g, n, h] when constant."""
    M = M.to(ct)
    if M.dim() == 2:  # [d, n]
        dim, dstate = M.shape
        return M.view(groups, dim // groups, dstate).transpose(1, 2).contiguous()
    if M.dim() == 3:  # [b, n, l]: one group, shared by all
        M = M.unsqueeze(1)
    M = M.permute(3, 0, 1, 2)  # [l, b, g', n]
    return M.expand(-1, -1, groups, -1).contiguous() if M.shape[2] != groups else M.contiguous()


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The chunked pure-PyTorch scan (any device); same arguments as `selective_scan_reference`.

    ``chunk`` is the number of time steps per chunk (default: sized for the CPU cache); it changes speed
    and memory only, never the result.
    """
    _check_shapes(u, delta, A, B, C)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    if length == 0:
        raise ValueError("selective_scan needs a sequence of length >= 1")
    group_counts = {M.shape[1] for M in (B, C) if M.dim() == 4}
    if len(group_counts) > 1:
        raise ValueError(f"B and C must have the same number of groups; got {sorted(group_counts)}")
    groups = group_counts.pop() if group_counts else 1
    if dim % groups:
        raise ValueError(f"dim {dim} is not divisible by the number of B/C groups {groups}")
    head = dim // groups
    dtype_in, ct = u.dtype, _compute_dtype(u)

    def time_major(x: Tensor) -> Tensor:  # [b, d, l] -> contiguous [l, b, d] (free for time-major storage)
        return x.permute(2, 0, 1).to(ct).contiguous()

    # All elementwise work happens time-major, so no op mixes memory layouts.
    u_t, delta_t = time_major(u), time_major(delta)
    if delta_bias is not None:
        delta_t = delta_t + delta_bias.to(ct)
    if delta_softplus:
        delta_t = F.softplus(delta_t)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (u_t, delta_t, A, B, C))
    y, last = _SelectiveScanFn.apply(
        u_t,
        delta_t,
        A.to(ct).view(groups, head, dstate).transpose(1, 2).contiguous(),
        _internal_bc(B, groups, ct),
        _internal_bc(C, groups, ct),
        chunk or _default_chunk(batch, dim, dstate, length),
        save,
    )
    if D is not None:
        y = y + u_t * D.to(ct)
    if z is not None:
        y = y * F.silu(time_major(z))
    out = y.to(dtype_in).permute(1, 2, 0)  # [b, d, l] view of time-major storage
    if not return_last_state:
        return out
    return out, last.transpose(2, 3).reshape(batch, dim, dstate)  # [b, g, n, h] -> [b, d, n]


# --------------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------------

_SCAN_PATHS = ("auto", "mamba_ssm", "chunked", "reference")
_logged_paths: set[str] = set()


def _mamba_selective_scan_fn(device: torch.device) -> Callable[..., Any] | None:
    """mamba_ssm's fused `selective_scan_fn` for tensors on ``device`` (`raycad.model.kernels` decides), or None."""
    return fused_kernels(device).selective_scan_fn


def scan_path(device: torch.device) -> str:
    """The implementation `selective_scan` uses for tensors on ``device``.

    ``RAYCAD_SELECTIVE_SCAN`` = ``auto`` (default) | ``mamba_ssm`` | ``chunked`` | ``reference`` overrides it.
    ``auto`` means mamba_ssm's CUDA kernel for CUDA tensors when mamba_ssm imports (the decision of
    `raycad.model.kernels.fused_kernels`), else the chunked scan.
    """
    choice = os.environ.get("RAYCAD_SELECTIVE_SCAN", "auto").strip().lower()
    if choice not in _SCAN_PATHS:
        raise ValueError(f"RAYCAD_SELECTIVE_SCAN={choice!r}: expected one of {', '.join(_SCAN_PATHS)}")
    if choice == "auto":
        return "mamba_ssm" if _mamba_selective_scan_fn(device) is not None else "chunked"
    if choice == "mamba_ssm" and _mamba_selective_scan_fn(device) is None:
        raise RuntimeError("RAYCAD_SELECTIVE_SCAN=mamba_ssm needs CUDA tensors and an importable mamba_ssm")
    return choice


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The selective scan by the fastest available path (see `scan_path`); arguments as
    `selective_scan_reference`. The first use of each path is logged once.
    """
    path = scan_path(u.device)
    if path not in _logged_paths:
        _logged_paths.add(path)
        get_logger(__name__).info("selective scan: using the %s path (%s tensors)", path, u.device.type)
    if path == "mamba_ssm":
        return _mamba_selective_scan_fn(u.device)(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    fn = selective_scan_chunked if path == "chunked" else selective_scan_reference
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
