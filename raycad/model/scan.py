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

`selective_scan_reference` is the plain sequential loop; `selective_scan_chunked` its fast pure-PyTorch twin
(any device); `selective_scan_fused` the fused CPU kernels (numba, when installed). `selective_scan` dispatches
(see `scan_path`; ``model.scan_impl`` in the run config).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from raycad.model.kernels import fused_kernels
from raycad.runtime import get_logger

__all__ = [
    "SCAN_IMPLS", "fused_available", "scan_path", "selective_scan", "selective_scan_chunked",
    "selective_scan_fused", "selective_scan_reference", "set_scan_impl",
]

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


def _groups(B: Tensor, C: Tensor, dim: int) -> int:
    """Number of channel groups of B/C (1 unless one of them is grouped ``[b, g, n, l]``)."""
    group_counts = {M.shape[1] for M in (B, C) if M.dim() == 4}
    if len(group_counts) > 1:
        raise ValueError(f"B and C must have the same number of groups; got {sorted(group_counts)}")
    groups = group_counts.pop() if group_counts else 1
    if dim % groups:
        raise ValueError(f"dim {dim} is not divisible by the number of B/C groups {groups}")
    return groups


def _internal_bc(M: Tensor, groups: int, ct: torch.dtype, batch_major: bool = False) -> Tensor:
    """B/C in the internal layout: [l, b, g, n] ([b, l, g, n] when ``batch_major``) when input dependent,
    [g, n, h] when constant."""
    M = M.to(ct)
    if M.dim() == 2:  # [d, n]
        dim, dstate = M.shape
        return M.view(groups, dim // groups, dstate).transpose(1, 2).contiguous()
    if M.dim() == 3:  # [b, n, l]: one group, shared by all
        M = M.unsqueeze(1)
    M = M.permute(0, 3, 1, 2) if batch_major else M.permute(3, 0, 1, 2)  # [b, l, g', n] / [l, b, g', n]
    return M.expand(-1, -1, groups, -1).contiguous() if M.shape[2] != groups else M.contiguous()


def _time_major(x: Tensor, ct: torch.dtype) -> Tensor:
    """``[b, d, l]`` -> contiguous ``[l, b, d]`` in the compute dtype (free for time-major storage)."""
    return x.permute(2, 0, 1).to(ct).contiguous()


def _batch_major(x: Tensor, ct: torch.dtype) -> Tensor:
    """``[b, d, l]`` -> contiguous ``[b, l, d]`` in the compute dtype (free for batch-major storage)."""
    return x.transpose(1, 2).to(ct).contiguous()


def _gate(y: Tensor, u_t: Tensor, D: Tensor | None, z: Tensor | None, ct: torch.dtype) -> Tensor:
    """``(y + D u) * silu(z)`` on time-major ``[l, b, d]`` (each part only when given)."""
    if D is not None:
        y = y + u_t * D.to(ct)
    if z is not None:
        y = y * F.silu(_time_major(z, ct))
    return y


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
    groups = _groups(B, C, dim)
    head = dim // groups
    dtype_in, ct = u.dtype, _compute_dtype(u)
    # All elementwise work happens time-major, so no op mixes memory layouts.
    u_t, delta_t = _time_major(u, ct), _time_major(delta, ct)
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
    out = _gate(y, u_t, D, z, ct).to(dtype_in).permute(1, 2, 0)  # [b, d, l] view of time-major storage
    if not return_last_state:
        return out
    return out, last.transpose(2, 3).reshape(batch, dim, dstate)  # [b, g, n, h] -> [b, d, n]


# --------------------------------------------------------------------------------------------------------
# Fused CPU scan: numba kernels (raycad/model/_scan_numba.py), one pass over the inputs per direction.
# --------------------------------------------------------------------------------------------------------

FUSED_CHUNK = 32
"""Time steps between the states the fused forward keeps for its backward (``L / 32`` states of ``[b, d, n]``)."""
FUSED_WIDTH = 512
"""Most channels per block of the fused kernels (a block is at most a group's channels): a block's ``[n, 512]``
state stays in L1/L2 and its ``[32, n, 512]`` backward buffers in L2, and each step reads one long contiguous
run per input (measured, B8 D512 L1024: blocks of 64 channels 1.4x slower, 256 1.2x)."""
FUSED_SPLIT_WIDTH = 64
"""Fewest channels per parallel task when a group's channels are split across threads (see `_fused_blocks`)."""


def _numba_cache_dir() -> str:
    """A writable directory for numba's compiled-kernel cache: ``$NUMBA_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/raycad/numba`` (``~/.cache/...``), else one under the temp directory."""
    import tempfile

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (os.path.join(base, "raycad", "numba"),
                      os.path.join(tempfile.gettempdir(), f"raycad-numba-{os.getuid()}")):
        try:
            os.makedirs(candidate, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return tempfile.mkdtemp(prefix="raycad-numba-")


def _wide_vector_features() -> str | None:
    """The host's CPU features plus ``-prefer-256-bit`` on AVX-512 CPUs (LLVM otherwise emits 256-bit vectors
    there): the kernels' channel loops then run on 512-bit vectors, measured 1.2x faster for the scan forward +
    backward (B32 D256 L251 and B8 D512 L1024). None when the user set ``NUMBA_CPU_FEATURES``/``NUMBA_CPU_NAME``,
    the CPU has no AVX-512 or llvmlite (numba's own dependency) is missing."""
    if os.environ.get("NUMBA_CPU_FEATURES") or os.environ.get("NUMBA_CPU_NAME"):
        return None
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    except (ImportError, RuntimeError):
        return None
    return features + ",-prefer-256-bit" if "+avx512f" in features.split(",") else None


@functools.lru_cache(maxsize=1)
def _kernel_module() -> Any:
    """`raycad.model._scan_numba` (numba's cache directory and, see `_wide_vector_features`, CPU features set
    first: numba reads both at import)."""
    if "numba" not in sys.modules:
        if not os.environ.get("NUMBA_CACHE_DIR"):
            os.environ["NUMBA_CACHE_DIR"] = _numba_cache_dir()
        features = _wide_vector_features()
        if features:
            os.environ["NUMBA_CPU_FEATURES"] = features
    kernels = importlib.import_module("raycad.model._scan_numba")
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        # numba's own thread pool, not OpenMP: after an OpenMP-layer kernel, the idle OpenMP workers slowed the
        # torch ops that follow ~15x here (measured: the chunked scan 212 -> 3520 ms CPU). The workqueue layer
        # takes one parallel launch at a time, which is how raycad calls it (from the training thread).
        kernels.numba.config.THREADING_LAYER = "workqueue"
    return kernels


@functools.lru_cache(maxsize=1)
def _fused_kernels() -> Any:
    """The compiled fused-scan kernels (module `raycad.model._scan_numba`), or None when numba is not
    importable or the kernels do not compile (logged once; ``auto`` then uses the chunked scan).

    Compiles (or loads from numba's on-disk cache) the float32 forward and backward on first call and logs the
    time it took."""
    log = get_logger(__name__)
    start = time.perf_counter()
    try:
        kernels = _kernel_module()
        _run_fused(*[torch.ones(s) for s in ((2, 2, 3), (2, 2, 3), (2, 2), (2, 1, 2, 3))])
        x, w = torch.ones(3, 2, 2).numpy(), torch.ones(4, 2).numpy()  # the depthwise conv beside the scan
        kernels.conv_forward(x, w, w[0], False, 1, kernels.constants(x.dtype), x.copy())
        kernels.conv_backward(x, w, w[0], x, False, 1, kernels.constants(x.dtype), x.copy(),
                              torch.ones(2, 4, 2).numpy(), w[:2].copy())
    except Exception as exc:  # noqa: BLE001 - no numba (ImportError) or any numba/LLVM compile error: fall back
        reason = str(exc).splitlines()[0] if str(exc) else ""
        log.warning("fused selective scan unavailable (%s: %s); using the chunked scan", type(exc).__name__, reason)
        return None
    log.info("fused selective scan: numba %s kernels ready in %.1f s (cache: %s)", kernels.numba_version(),
             time.perf_counter() - start, os.environ.get("NUMBA_CACHE_DIR", "numba default"))
    return kernels


def fused_scan_kernels() -> Any:
    """The numba kernels module (`raycad.model._scan_numba`), its thread count set to torch's; only call when
    `fused_available`."""
    kernels = _kernel_module()
    _numba_threads(kernels)
    return kernels


def fused_available() -> bool:
    """Whether the fused CPU scan can run here (numba importable and its kernels compiled)."""
    return _fused_kernels() is not None


def _fused_splits(batch: int, groups: int, head: int, threads: int) -> int:
    """Splits of a group's channels into parallel tasks: one unless (batch row, group) pairs are too few to
    keep every thread busy (each split adds a partial sum of the B/C gradients)."""
    pairs = batch * groups
    if threads <= 1 or pairs >= 2 * threads:
        return 1
    return max(1, min(math.ceil(head / FUSED_SPLIT_WIDTH), math.ceil(2 * threads / pairs)))


def _fused_blocks(batch: int, groups: int, head: int, threads: int) -> tuple[int, int]:
    """(splits, block width) of the fused kernels: `_fused_splits` tasks per (row, group), each cut into blocks
    of at most `FUSED_WIDTH` channels."""
    splits = _fused_splits(batch, groups, head, threads)
    return splits, min(FUSED_WIDTH, math.ceil(head / splits))


def _numba_threads(kernels: Any) -> int:
    """numba's thread count = torch's (so a Ray worker given 1 CPU runs the scan on 1 thread)."""
    threads = max(1, min(torch.get_num_threads(), kernels.max_threads()))
    kernels.set_threads(threads)
    return threads


def _np(x: Tensor) -> Any:
    return x.detach().numpy()


class _FusedScanFn(torch.autograd.Function):
    """The whole fused scan (delta_bias, softplus, recurrence, D, z gate) on internal-layout tensors: u, delta and
    z time-major ``[l, b, d]`` (batch-major ``[b, l, d]`` when ``batch_major``), A [d, n], B and C [l, b, g, n]
    ([b, l, g, n]), D and delta_bias [d], all contiguous in the compute dtype; z, D and delta_bias may be None.
    Groups from ``rev_group`` on walk time backwards. Returns the output (u's layout) and the last state [b, d, n]."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, z: Tensor | None, D: Tensor | None, bias: Tensor | None, A: Tensor,
                B: Tensor, C: Tensor, softplus: bool, save: bool, batch_major: bool, rev_group: int):
        kernels = _kernel_module()
        length, batch, dim = (u.shape[1], u.shape[0], u.shape[2]) if batch_major else u.shape
        groups, dstate = B.shape[2], B.shape[3]
        states = u.new_empty(math.ceil(length / FUSED_CHUNK) if save else 0, batch, dstate, dim)
        out, last = torch.empty_like(u), u.new_empty(batch, dim, dstate)
        zeros = u.new_zeros(dim) if D is None or bias is None else None
        D_, bias_ = (D if D is not None else zeros), (bias if bias is not None else zeros)
        At = A.t().contiguous()
        splits, width = _fused_blocks(batch, groups, dim // groups, _numba_threads(kernels))
        kernels.scan_forward(_np(u), _np(delta), _np(z if z is not None else u), _np(D_), _np(bias_),
                             _np(_decay_table(At)), _np(B), _np(C), softplus, z is not None, batch_major, rev_group,
                             kernels.constants(_np(u).dtype), FUSED_CHUNK, width, splits, _np(out), _np(last),
                             _np(states))
        if save:
            ctx.save_for_backward(u, delta, z, D_, bias_, At, B, C, states)
            ctx.softplus, ctx.batch_major, ctx.rev_group = softplus, batch_major, rev_group
            ctx.has = (z is not None, D is not None, bias is not None)
        return out, last

    @staticmethod
    def backward(ctx, gout: Tensor, glast: Tensor | None):
        kernels = _kernel_module()
        u, delta, z, D, bias, At, B, C, states = ctx.saved_tensors
        has_z, has_D, has_bias = ctx.has
        batch, dim = u.shape[0 if ctx.batch_major else 1], u.shape[2]
        groups, dstate = B.shape[2], B.shape[3]
        splits, width = _fused_blocks(batch, groups, dim // groups, _numba_threads(kernels))
        glast = glast.contiguous() if glast is not None else u.new_zeros(batch, dim, dstate)
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gz = torch.empty_like(z) if has_z else gu  # not written without a gate
        gD_rows, gbias_rows, gA_rows = u.new_empty(batch, dim), u.new_empty(batch, dim), u.new_empty(batch, dim, dstate)
        gB_parts, gC_parts = u.new_zeros(splits, *B.shape), u.new_zeros(splits, *C.shape)
        kernels.scan_backward(_np(u), _np(delta), _np(z if has_z else u), _np(D), _np(bias), _np(_decay_table(At)),
                              _np(At), _np(B), _np(C), ctx.softplus, has_z, ctx.batch_major, ctx.rev_group,
                              kernels.constants(_np(u).dtype), FUSED_CHUNK, width, splits, _np(states), _np(gout.contiguous()), _np(glast),
                              _np(gu), _np(gdelta), _np(gz), _np(gD_rows), _np(gbias_rows), _np(gA_rows),
                              _np(gB_parts), _np(gC_parts))
        return (gu, gdelta, gz if has_z else None, gD_rows.sum(0) if has_D else None,
                gbias_rows.sum(0) if has_bias else None, gA_rows.sum(0), gB_parts.sum(0), gC_parts.sum(0), None, None,
                None, None)


def _decay_table(At: Tensor) -> Tensor:
    """The kernels' decay exponent table: ``A^T log2(e)`` in float32 (they compute ``2^(delta' A log2 e)``),
    ``A^T`` in float64 (libm's exp)."""
    return At * LOG2_E if At.dtype == torch.float32 else At


def _run_fused(u: Tensor, delta: Tensor, A: Tensor, B: Tensor) -> None:
    """One tiny float32 forward + backward through the fused kernels: compiles them or loads them from cache.

    Gradients are switched on here: the first model call in a process may come from inference code (under
    ``torch.no_grad`` or ``torch.inference_mode``), and the backward kernel must compile all the same."""
    with torch.inference_mode(False), torch.enable_grad():
        inputs = [t.clone().requires_grad_() for t in (u, delta, -A, B, B)]
        out = selective_scan_fused(*inputs, D=torch.ones(u.shape[1]), z=u.clone(),
                                   delta_bias=torch.zeros(u.shape[1]), delta_softplus=True, _warmup=True)
        out.sum().backward()


def selective_scan_fused(
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
    reverse_groups: int = 0,
    _warmup: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The fused CPU scan (numba); same arguments as `selective_scan_reference`, and ``reverse_groups``: the last
    that many groups of (grouped) B/C scan time backwards (the bidirectional mixer's reverse direction): their
    channels of ``out`` equal the scan of their inputs flipped in time, flipped back, and their last state is the
    one after step 0; no flipped copy is made.

    Input-dependent (incl. grouped) B/C run in the fused kernels; constant ``[dim, dstate]`` B/C (not used by
    Mamba) take the chunked scan. The kernels run time-major when ``u`` is stored time-major (a ``[b, d, l]`` view
    of ``[l, b, d]`` storage), else batch-major (``[b, l, d]``: the faster layout, free for a view of it); the
    output is a view of the layout used. Raises RuntimeError when numba is unavailable (see `fused_available`).
    """
    _check_shapes(u, delta, A, B, C)
    if reverse_groups and (B.dim() == 2 or C.dim() == 2):
        raise ValueError("reverse_groups needs input-dependent B and C (their groups are the scan directions)")
    if B.dim() == 2 or C.dim() == 2:
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if u.device.type != "cpu":
        raise RuntimeError(f"the fused selective scan runs on CPU tensors, got {u.device.type}")
    if not _warmup and _fused_kernels() is None:
        raise RuntimeError("the fused selective scan needs numba (pip install numba); see the log for why it "
                           "is unavailable")
    _, dim, length = u.shape
    if length == 0:
        raise ValueError("selective_scan needs a sequence of length >= 1")
    groups = _groups(B, C, dim)
    if not 0 <= reverse_groups <= groups:
        raise ValueError(f"reverse_groups={reverse_groups} must be between 0 and the {groups} B/C group(s)")
    dtype_in, ct = u.dtype, _compute_dtype(u)
    batch_major = not u.permute(2, 0, 1).is_contiguous()
    layout = _batch_major if batch_major else _time_major
    z_t = layout(z, ct) if z is not None else None
    D_, bias = (None if v is None else v.to(ct).contiguous() for v in (D, delta_bias))
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, delta, z, D, delta_bias, A, B, C))
    out, last = _FusedScanFn.apply(layout(u, ct), layout(delta, ct), z_t, D_, bias, A.to(ct).contiguous(),
                                   _internal_bc(B, groups, ct, batch_major), _internal_bc(C, groups, ct, batch_major),
                                   delta_softplus, save, batch_major, groups - reverse_groups)
    out = out.to(dtype_in).permute(0, 2, 1) if batch_major else out.to(dtype_in).permute(1, 2, 0)
    return (out, last) if return_last_state else out


# --------------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------------

SCAN_IMPLS = ("auto", "fused", "mamba_ssm", "chunked", "reference")
_logged_paths: set[str] = set()
_configured: str = "auto"


def _mamba_selective_scan_fn(device: torch.device) -> Callable[..., Any] | None:
    """mamba_ssm's fused `selective_scan_fn` for tensors on ``device`` (`raycad.model.kernels` decides), or None."""
    return fused_kernels(device).selective_scan_fn


def set_scan_impl(impl: str) -> None:
    """Choose the scan implementation for this process (``model.scan_impl`` of the run config; applied by
    `raycad.train.build.build_model`). ``auto`` leaves the choice to ``RAYCAD_SELECTIVE_SCAN`` / `scan_path`."""
    global _configured
    if impl not in SCAN_IMPLS:
        raise ValueError(f"scan implementation {impl!r}: expected one of {', '.join(SCAN_IMPLS)}")
    _configured = impl


def scan_path(device: torch.device | str = "cpu") -> str:
    """The implementation `selective_scan` uses for tensors on ``device``.

    The choice is `set_scan_impl`'s (``model.scan_impl``), else ``RAYCAD_SELECTIVE_SCAN``, else ``auto``:
    ``auto`` = mamba_ssm's kernel when `raycad.model.kernels.fused_kernels` provides it for the device (CUDA
    with mamba_ssm installed), else the fused numba scan for CPU tensors when numba is available, else the
    chunked scan. An explicit ``fused`` or ``mamba_ssm`` that cannot run raises.
    """
    device = torch.device(device)
    choice = _configured
    if choice == "auto":
        choice = os.environ.get("RAYCAD_SELECTIVE_SCAN", "auto").strip().lower()
        if choice not in SCAN_IMPLS:
            raise ValueError(f"RAYCAD_SELECTIVE_SCAN={choice!r}: expected one of {', '.join(SCAN_IMPLS)}")
    if choice == "auto":
        if _mamba_selective_scan_fn(device) is not None:
            return "mamba_ssm"
        return "fused" if device.type == "cpu" and fused_available() else "chunked"
    if choice == "mamba_ssm" and _mamba_selective_scan_fn(device) is None:
        raise RuntimeError("scan implementation mamba_ssm needs CUDA tensors and an importable mamba_ssm")
    if choice == "fused" and (device.type != "cpu" or not fused_available()):
        raise RuntimeError("scan implementation fused needs CPU tensors and numba (pip install numba); "
                           "see the log for why it is unavailable")
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
    fn = {"fused": selective_scan_fused, "chunked": selective_scan_chunked}.get(path, selective_scan_reference)
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
