"""The fused CPU selective scan: numba kernels for forward and backward (imported lazily by `raycad.model.scan`),
and the depthwise causal conv of the Mamba mixer that runs beside it (`conv_forward`, `conv_backward`).

The kernels compute the recurrence itself, ``x[t] = exp(delta'[t] A) x[t-1] + delta'[t] u[t] B[t]``,
``y[t] = sum_n C[t] x[t]``; delta_bias, softplus, D and the z gate are vectorised torch ops around them (see
`raycad.model.scan.selective_scan_fused`). Everything is time-major, as in raycad's model: ``u``, delta' and
``y`` are ``[L, b, d]``, input-dependent ``B``/``C`` ``[L, b, g, n]`` (channels split into ``g`` equal groups
of ``h = d / g``), ``A`` is given transposed as ``[n, d]``. One parallel task is a (batch row, group, split)
triple; it walks its channels in blocks of ``W`` and, for each block, the whole sequence with the block's
``[n, W]`` state in cache, so every input is read once per pass and y written once. Nothing of size
``L * b * d * n`` exists: the forward keeps the state entering every ``T``-step chunk (``L / T`` states), and
the backward recomputes a chunk's states and factors ``exp(delta' A)`` from it into ``[T, n, W]`` buffers,
then runs the adjoint recurrence in reverse::

    G[t] = dL/dx[t] = C[t] dy[t] + exp(delta'[t+1] A) G[t+1]

The gradient of A is written per batch row; gradients of B/C are summed over a task's channels and written
per split (one split unless there are fewer (row, group) pairs than threads).

``exp(delta' A)`` is ``2^(delta' A log2 e)``: for float32 a degree-6 polynomial of the fraction times
``2^k`` built from the exponent bits (relative error <= 2.5e-7, vectorised by LLVM; libm's expf is a scalar
call, several times slower), for float64 (gradcheck) libm's ``exp``. Floating-point flags: ``contract`` (FMA)
and ``reassoc`` (so the sums over channels vectorise); no approximate math, NaN/Inf semantics kept.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

FASTMATH = {"contract", "reassoc"}
LN2 = math.log(2.0)
LOG2_E = 1.0 / LN2
# c[0..6]: Taylor coefficients of 2^f on [-1/2, 1/2]; c[7]: lowest exponent kept (2^-126, float32's smallest
# normal; below it the factor is < 1.2e-38 and flushes to 0); c[8] = 1/2; c[9] = 0.
_COEFS = [LN2 ** i / math.factorial(i) for i in range(7)] + [-126.0, 0.5, 0.0]


def constants(dtype: np.dtype) -> np.ndarray:
    """The kernels' floating-point constants in the compute dtype (so float32 code stays float32)."""
    return np.asarray(_COEFS, dtype=dtype)


@njit(inline="always", fastmath=FASTMATH)
def _decay(dA, ibits, fbits, dtb, A2t, At, c0, w, n_state, k, fast):
    """``dA[n, h] = exp(dt[h] * A[n, c0 + h])`` for one step of a block (see the module docstring)."""
    if not fast:
        for n in range(n_state):
            for h in range(w):
                dA[n, h] = math.exp(dtb[h] * At[n, c0 + h])
        return
    c0_, c1, c2, c3, c4, c5, c6, lo, half = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
    for n in range(n_state):
        for h in range(w):
            v = max(dtb[h] * A2t[n, c0 + h], lo)
            kf = np.floor(v + half)
            f = v - kf
            dA[n, h] = (((((c6 * f + c5) * f + c4) * f + c3) * f + c2) * f + c1) * f + c0_
            ibits[n, h] = (np.int32(kf) + np.int32(127)) << np.int32(23)
        for h in range(w):
            dA[n, h] *= fbits[n, h]


def _task_blocks(task, n_groups, n_splits, head, width):
    """(batch row, group, split, first block, end block) of a parallel task."""
    b = task // (n_groups * n_splits)
    g = (task // n_splits) % n_groups
    s = task % n_splits
    n_blocks = (head + width - 1) // width
    return b, g, s, (s * n_blocks) // n_splits, ((s + 1) * n_blocks) // n_splits


_task_blocks = njit(inline="always")(_task_blocks)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_forward(u, dt, A2t, At, Bm, Cm, y, last, states, k, fast, chunk, width, n_splits):
    """Forward: ``y[t] = sum_n C[t] x[t]`` [L, b, d] and ``last`` [b, d, n]; ``states`` [L/T, b, n, d] receives
    the state entering each chunk (when its first dimension is > 0). ``dt`` is delta' (after bias and
    softplus)."""
    length, batch, dim = u.shape
    n_groups, n_state = Bm.shape[2], Bm.shape[3]
    head = dim // n_groups
    save = states.shape[0] > 0
    for task in prange(batch * n_groups * n_splits):
        b, g, _, blk0, blk1 = _task_blocks(task, n_groups, n_splits, head, width)
        x = np.empty((n_state, width), u.dtype)
        dA = np.empty((n_state, width), u.dtype)
        ibits = np.empty((n_state, width), np.int32)
        fbits = ibits.view(np.float32)
        dtb = np.empty(width, u.dtype)
        dub = np.empty(width, u.dtype)
        yb = np.empty(width, u.dtype)
        for blk in range(blk0, blk1):
            c0 = g * head + blk * width
            w = min(width, (g + 1) * head - c0)
            x[:, :w] = 0
            for t in range(length):
                if save and t % chunk == 0:
                    for n in range(n_state):
                        for h in range(w):
                            states[t // chunk, b, n, c0 + h] = x[n, h]
                for h in range(w):
                    dtb[h] = dt[t, b, c0 + h]
                    dub[h] = dtb[h] * u[t, b, c0 + h]
                    yb[h] = 0
                _decay(dA, ibits, fbits, dtb, A2t, At, c0, w, n_state, k, fast)
                for n in range(n_state):
                    bn = Bm[t, b, g, n]
                    cn = Cm[t, b, g, n]
                    for h in range(w):
                        xv = dA[n, h] * x[n, h] + dub[h] * bn
                        x[n, h] = xv
                        yb[h] += xv * cn
                for h in range(w):
                    y[t, b, c0 + h] = yb[h]
            for n in range(n_state):
                for h in range(w):
                    last[b, c0 + h, n] = x[n, h]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_backward(u, dt, A2t, At, Bm, Cm, states, gy, glast, k, fast, chunk, width, n_splits,
                  gu, gdt, gA, gBp, gCp):
    """Backward of `scan_forward`. Writes ``gu``, ``gdt`` [L, b, d], per batch row ``gA`` [b, d, n], per split
    ``gBp``/``gCp`` [S, L, b, g, n] (zero-initialised, accumulated). ``glast`` is [b, d, n] (zeros when the
    last state has no gradient)."""
    length, batch, dim = u.shape
    n_groups, n_state = Bm.shape[2], Bm.shape[3]
    head = dim // n_groups
    n_chunks = states.shape[0]
    zero = k[9]
    for task in prange(batch * n_groups * n_splits):
        b, g, s, blk0, blk1 = _task_blocks(task, n_groups, n_splits, head, width)
        X = np.empty((chunk + 1, n_state, width), u.dtype)   # X[i + 1] = state after step i of the chunk
        dA = np.empty((chunk, n_state, width), u.dtype)
        ibits = np.empty((n_state, width), np.int32)
        fbits = ibits.view(np.float32)
        Gc = np.empty((n_state, width), u.dtype)              # exp(delta'[t+1] A) G[t+1]
        gAb = np.empty((n_state, width), u.dtype)
        dtb = np.empty((chunk, width), u.dtype)
        dub = np.empty((chunk, width), u.dtype)
        gyb = np.empty(width, u.dtype)
        gdu = np.empty(width, u.dtype)
        gdtA = np.empty(width, u.dtype)
        for blk in range(blk0, blk1):
            c0 = g * head + blk * width
            w = min(width, (g + 1) * head - c0)
            for n in range(n_state):
                for h in range(w):
                    Gc[n, h] = glast[b, c0 + h, n]
            gAb[:, :w] = 0
            for kc in range(n_chunks - 1, -1, -1):
                t0 = kc * chunk
                nt = min(chunk, length - t0)
                # Recompute the chunk's states and decay factors from its entry state.
                for n in range(n_state):
                    for h in range(w):
                        X[0, n, h] = states[kc, b, n, c0 + h]
                for i in range(nt):
                    t = t0 + i
                    for h in range(w):
                        dtb[i, h] = dt[t, b, c0 + h]
                        dub[i, h] = dtb[i, h] * u[t, b, c0 + h]
                    _decay(dA[i], ibits, fbits, dtb[i], A2t, At, c0, w, n_state, k, fast)
                    for n in range(n_state):
                        bn = Bm[t, b, g, n]
                        for h in range(w):
                            X[i + 1, n, h] = dA[i, n, h] * X[i, n, h] + dub[i, h] * bn
                # Adjoint recurrence, newest step first.
                for i in range(nt - 1, -1, -1):
                    t = t0 + i
                    for h in range(w):
                        gyb[h] = gy[t, b, c0 + h]
                        gdu[h] = zero
                        gdtA[h] = zero
                    for n in range(n_state):
                        bn = Bm[t, b, g, n]
                        cn = Cm[t, b, g, n]
                        sum_c = zero
                        sum_b = zero
                        for h in range(w):
                            G = Gc[n, h] + cn * gyb[h]
                            sum_c += gyb[h] * X[i + 1, n, h]
                            sum_b += G * dub[i, h]
                            gdu[h] += G * bn
                            q = G * dA[i, n, h] * X[i, n, h]
                            gdtA[h] += q * At[n, c0 + h]
                            gAb[n, h] += q * dtb[i, h]
                            Gc[n, h] = G * dA[i, n, h]
                        gCp[s, t, b, g, n] += sum_c
                        gBp[s, t, b, g, n] += sum_b
                    for h in range(w):
                        gu[t, b, c0 + h] = gdu[h] * dtb[i, h]
                        gdt[t, b, c0 + h] = gdtA[h] + gdu[h] * u[t, b, c0 + h]
            for h in range(w):
                for n in range(n_state):
                    gA[b, c0 + h, n] = gAb[n, h]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_forward(x, wT, bias, out):
    """Causal depthwise conv1d on time-major ``x`` [L, b, c] with ``wT`` [K, c] (the weight transposed) and
    ``bias`` [c]: ``out[t] = bias + sum_k wT[k] x[t - K + 1 + k]`` (terms before the start left out)."""
    length, batch, chans = x.shape
    kernel = wT.shape[0]
    for b in prange(batch):
        for t in range(length):
            for c in range(chans):
                out[t, b, c] = bias[c]
            for k in range(max(0, kernel - 1 - t), kernel):
                s = t - kernel + 1 + k
                for c in range(chans):
                    out[t, b, c] += wT[k, c] * x[s, b, c]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_backward(x, wT, gout, gx, gw_rows, gb_rows):
    """Backward of `conv_forward`: ``gx`` [L, b, c]; per batch row the weight gradient ``gw_rows`` [b, K, c]
    and the bias gradient ``gb_rows`` [b, c]."""
    length, batch, chans = x.shape
    kernel = wT.shape[0]
    for b in prange(batch):
        gw_rows[b] = 0
        gb_rows[b] = 0
        for s in range(length):
            for c in range(chans):
                gx[s, b, c] = 0
                gb_rows[b, c] += gout[s, b, c]
            for k in range(max(0, s + kernel - length), kernel):
                t = s + kernel - 1 - k  # the output step that reads x[s] with tap k
                for c in range(chans):
                    gx[s, b, c] += gout[t, b, c] * wT[k, c]
                    gw_rows[b, k, c] += gout[t, b, c] * x[s, b, c]


def numba_version() -> str:
    return numba.__version__


def max_threads() -> int:
    """numba's thread pool size (``NUMBA_NUM_THREADS``, default: the machine's CPU count)."""
    return numba.config.NUMBA_NUM_THREADS


def set_threads(threads: int) -> None:
    numba.set_num_threads(threads)
