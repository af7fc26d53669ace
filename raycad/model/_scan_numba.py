"""The fused CPU selective scan: numba kernels for forward and backward (imported lazily by `raycad.model.scan`),
and the depthwise causal conv of the Mamba mixer that runs beside it (`conv_forward`, `conv_backward`).

The kernels do the whole of `raycad.model.scan.selective_scan_reference` in one pass over the inputs::

    delta'[t] = softplus(delta[t] + delta_bias)                       (softplus only when asked)
    x[t]      = exp(delta'[t] A) x[t-1] + delta'[t] u[t] B[t]
    out[t]    = (sum_n C[t] x[t] + D u[t]) * silu(z[t])                (the gate only when z is given)

``u``, ``delta``, ``z`` and ``out`` are ``[L, b, d]`` (time-major) or ``[b, L, d]`` (batch-major, the faster:
see the kernels' section), input-dependent ``B``/``C`` ``[L, b, g, n]`` / ``[b, L, g, n]`` (channels split into ``g``
equal groups of ``h = d / g``), ``A`` is given transposed as ``[n, d]``. One parallel task is a (batch row, group, split) triple; it walks its channels
in blocks of ``W`` and, for each block, the whole sequence with the block's ``[n, W]`` state in L1, so every
input is read once per pass and the output written once. Nothing of size ``L * b * d * n`` exists: the forward
keeps the state entering every ``T``-step chunk (``L / T`` states), and the backward recomputes a chunk's
states, decay factors ``exp(delta' A)`` and pre-gate outputs from it into ``[T, n, W]`` buffers (L2), then runs
the adjoint recurrence in reverse::

    G[t] = dL/dx[t] = C[t] dy[t] + exp(delta'[t+1] A) G[t+1]

Groups from ``rev_group`` on run *reversed in time* (step ``L - 1`` first: their ``out[t]`` depends on steps
``t..L-1``), as the bidirectional mixer's reverse direction needs: the same as flipping their inputs in time,
scanning and flipping the output back, without the copies. A task maps its logical step ``t`` to row
``L - 1 - t``; chunks and saved states are in logical order. The conv kernels take ``rev_from`` likewise: channels
from it on are anti-causal (the conv of the time-reversed sequence, read back in the original order).

The gradients of A, D and delta_bias are written per batch row (summed by the caller); those of B/C are summed
over a task's channels and written per split (one split unless there are fewer (row, group) pairs than threads).

Every inner loop runs over the ``W`` channels of a block, contiguous in memory, through one-dimensional views,
so LLVM vectorises it (multi-dimensional indexing with a runtime offset would not be). In float32 ``exp`` is
``2^(x log2 e)``: a degree-6 polynomial of the fraction times ``2^k`` built from the exponent bits (relative
error <= 2.5e-7), and softplus' ``log1p`` an odd series in ``s = e / (2 + e)`` (error < 1e-7), both vectorised
(libm's are scalar calls, several times slower); in float64 (gradcheck) libm's ``exp`` and ``log1p``.
Floating-point flags: ``contract`` (FMA) and ``reassoc`` (so sums over channels vectorise); no approximate
math, NaN/Inf semantics kept.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

FASTMATH = {"contract", "reassoc"}
U = np.uint64
JIT = {"fastmath": FASTMATH, "error_model": "numpy"}
LN2 = math.log(2.0)
LOG2_E = 1.0 / LN2
# k[0..6]: Taylor coefficients of 2^f on [-1/2, 1/2]; k[7]: lowest exponent kept (2^-126, float32's smallest
# normal; below it the factor is < 1.2e-38 and flushes to 0); k[8] = 1/2; k[9] = 0; k[10] = highest exponent
# (2^126: exp of larger arguments saturates instead of overflowing the exponent bits); k[11] = log2(e);
# k[12..17] = 1/3, 1/5, ..., 1/13 (the log1p series); k[18] = 1, k[19] = 2. Every constant in the kernels comes
# from here: a Python literal would be float64 and turn float32 arithmetic into float64 (and scalar) code.
_COEFS = ([LN2 ** i / math.factorial(i) for i in range(7)] + [-126.0, 0.5, 0.0, 126.0, LOG2_E]
          + [1.0 / (2 * i + 1) for i in range(1, 7)] + [1.0, 2.0])


def constants(dtype: np.dtype) -> np.ndarray:
    """The kernels' floating-point constants in the compute dtype (so float32 code stays float32)."""
    return np.asarray(_COEFS, dtype=dtype)


def _approx(x):
    """Whether the kernels use their vectorised float32 exp/log1p for ``x``'s dtype (a compile-time constant)."""
    raise NotImplementedError  # only called from jitted code, see the overload below


@overload(_approx, inline="always")
def _approx_impl(x):
    approx = x.dtype == types.float32
    return lambda x: approx


@njit(inline="always", **JIT)
def _pow2(v, k):
    """``2^v`` for float32 ``v`` (clamped to [-126, 126]): polynomial of the fraction times the exponent bits."""
    v = min(max(v, k[7]), k[10])
    kf = np.floor(v + k[8])
    f = v - kf
    p = (((((k[6] * f + k[5]) * f + k[4]) * f + k[3]) * f + k[2]) * f + k[1]) * f + k[0]
    bits = (np.int32(kf) + np.int32(127)) << np.int32(23)
    return p * np.int32(bits).view(np.float32)


@njit(inline="always", **JIT)
def _exp(x, k):
    if _approx(k):
        return _pow2(x * k[11], k)
    return math.exp(x)


@njit(inline="always", **JIT)
def _decay(v, k):
    """``exp(delta' A)`` from ``v = delta' A2``: ``2^v`` in float32 (A2 = A log2 e), ``exp(v)`` otherwise (A2 = A)."""
    if _approx(k):
        return _pow2(v, k)
    return math.exp(v)


@njit(inline="always", **JIT)
def _sigmoid(x, k):
    return k[18] / (k[18] + _exp(-x, k))


@njit(inline="always", **JIT)
def _softplus(x, k):
    """``log(1 + e^x)`` as torch computes it (``x`` itself above 20)."""
    if _approx(k):
        e = _exp(-abs(x), k)                  # in (0, 1]
        s = e / (k[19] + e)                       # log1p(e) = 2 atanh(s), s in (0, 1/3]
        s2 = s * s
        series = (((((k[17] * s2 + k[16]) * s2 + k[15]) * s2 + k[14]) * s2 + k[13]) * s2 + k[12]) * s2 + k[18]
        return max(x, k[9]) + k[19] * s * series
    return x if x > 20 else math.log1p(math.exp(x))


def _task_blocks(task, n_groups, n_splits, head, width):
    """(batch row, group, split, first block, end block) of a parallel task."""
    b = task // (n_groups * n_splits)
    g = (task // n_splits) % n_groups
    s = task % n_splits
    n_blocks = (head + width - 1) // width
    return b, g, s, (s * n_blocks) // n_splits, ((s + 1) * n_blocks) // n_splits


_task_blocks = njit(inline="always")(_task_blocks)


# ---- one time step of one channel block ------------------------------------------------------------------------
# Arrays are flat (1-D) and every index is an unsigned ``uint64`` offset plus the channel ``h``: numba then emits no
# negative-index wraparound and no reference counting inside the loops, and each ``h`` loop vectorises. (Keep
# every index expression unsigned: numba types int64 op uint64 as float64.)


@njit(inline="always", **JIT)
def _delta_row(delta, bias, u, r, c0, w, softplus, k, dt, du, sig, i):
    """``dt = delta' = softplus(delta + bias)``, ``du = dt u`` and (softplus only) ``sig = sigmoid(delta + bias)``,
    d delta' / d delta; inputs at offset ``r`` (``bias`` at ``c0``), outputs at ``i``."""
    if softplus:
        for h in range(w):
            v = delta[r + h] + bias[c0 + h]
            d = _softplus(v, k)
            dt[i + h] = d
            sig[i + h] = _sigmoid(v, k)
            du[i + h] = d * u[r + h]
    else:
        for h in range(w):
            d = delta[r + h] + bias[c0 + h]
            dt[i + h] = d
            du[i + h] = d * u[r + h]


@njit(inline="always", **JIT)
def _out_row(y, i, u, D, z, r, c0, w, gate, k, out):
    """``out = (y + D u) * silu(z)`` (``* silu(z)`` only when ``gate``)."""
    if gate:
        for h in range(w):
            zv = z[r + h]
            out[r + h] = (y[i + h] + D[c0 + h] * u[r + h]) * zv * _sigmoid(zv, k)
    else:
        for h in range(w):
            out[r + h] = y[i + h] + D[c0 + h] * u[r + h]


@njit(inline="always", **JIT)
def _gate_back_row(gout, y, i, u, D, z, r, c0, w, gate, k, gy, gz, gD):
    """Backward of `_out_row`: ``gy`` = d/dy (a block buffer), ``gz`` (when ``gate``), ``gD += gy u``."""
    if gate:
        for h in range(w):
            zv = z[r + h]
            sz = _sigmoid(zv, k)
            g = gout[r + h] * zv * sz
            gy[h] = g
            gz[r + h] = gout[r + h] * (y[i + h] + D[c0 + h] * u[r + h]) * sz * (k[18] + zv * (k[18] - sz))
            gD[h] += g * u[r + h]
    else:
        for h in range(w):
            gy[h] = gout[r + h]
            gD[h] += gout[r + h] * u[r + h]


@njit(inline="always", **JIT)
def _input_back_row(gdu, gdtA, dt, sig, i, u, D, r, c0, w, gy, softplus, gu, gdelta, gbias):
    """``gu = gdu dt + gy D``, ``gdelta = gdtA + gdu u`` (times ``sig`` through the softplus), ``gbias += gdelta``."""
    for h in range(w):
        gu[r + h] = gdu[h] * dt[i + h] + gy[h] * D[c0 + h]
        g = gdtA[h] + gdu[h] * u[r + h]
        if softplus:
            g *= sig[i + h]
        gdelta[r + h] = g
        gbias[h] += g


# ---- the kernels ----------------------------------------------------------------------------------------------
# ``batch_major`` selects the layout of the ``[*, *, d]`` arrays and of B/C: time-major ``[L, b, d]`` /
# ``[L, b, g, n]`` (a task's rows are ``b * d`` apart: a new page every step) or batch-major ``[b, L, d]`` /
# ``[b, L, g, n]`` (a task walks its own contiguous slab; up to 2x faster at L = 1024).


@njit(inline="always")
def _layout(shape, batch_major):
    """(length, batch) of a ``[*, *, d]`` array in the given layout."""
    if batch_major:
        return shape[1], shape[0]
    return shape[0], shape[1]


@njit(inline="always")
def _step(t, length, rev):
    """The row (storage step) of a task's logical step ``t``: ``t``, or ``length - 1 - t`` walking backwards."""
    if rev:
        return U(length - 1 - t)
    return U(t)


@njit(inline="always")
def _strides(batch_major, length, batch, row):
    """(time stride, batch stride) in elements of an array whose per-(step, batch row) record has ``row``
    elements (``d``, or ``g * n`` for B/C)."""
    if batch_major:
        return U(row), U(length) * U(row)
    return U(batch) * U(row), U(row)


@njit(parallel=True, cache=True, **JIT)
def scan_forward(u, delta, z, D, bias, A2t, Bm, Cm, softplus, gate, batch_major, rev_group, k, chunk, width,
                 n_splits, out, last, states):
    """Forward: ``out`` (``u``'s layout) and ``last`` [b, d, n]; ``states`` [L/T, b, n, d] receives the state
    entering each chunk (when its first dimension is > 0). ``A2t`` is A^T, times log2(e) in float32 (see
    `_decay`); ``z`` is ignored unless ``gate``; pass zeros for an absent ``D`` or ``bias``. Groups ``>= rev_group``
    walk time backwards (``states`` then hold the state entering each chunk of their reversed walk)."""
    length, batch = _layout(u.shape, batch_major)
    dim, n_groups, n_state = u.shape[2], Bm.shape[2], Bm.shape[3]
    head = dim // n_groups
    save = states.shape[0] > 0
    st, sb = _strides(batch_major, length, batch, dim)
    stB, sbB = _strides(batch_major, length, batch, n_groups * n_state)
    uf, df, zf, of, af = u.reshape(-1), delta.reshape(-1), z.reshape(-1), out.reshape(-1), A2t.reshape(-1)
    bf, cf, sf = Bm.reshape(-1), Cm.reshape(-1), states.reshape(-1)
    N, Dm, Wd = U(n_state), U(dim), U(width)
    for task in prange(batch * n_groups * n_splits):
        b, g, _, blk0, blk1 = _task_blocks(task, n_groups, n_splits, head, width)
        rev = g >= rev_group
        x = np.empty(n_state * width, u.dtype)
        dt = np.empty(width, u.dtype)
        du = np.empty(width, u.dtype)
        sig = np.empty(width, u.dtype)
        y = np.empty(width, u.dtype)
        for blk in range(blk0, blk1):
            c0 = U(g * head + blk * width)
            w = U(min(width, (g + 1) * head - (g * head + blk * width)))
            x[:] = 0
            for t in range(length):
                p = _step(t, length, rev)
                r = p * st + U(b) * sb + c0
                bc = p * stB + U(b) * sbB + U(g) * N
                if save and t % chunk == 0:
                    for n in range(N):
                        so = (U(t // chunk * batch + b) * N + n) * Dm + c0
                        for h in range(w):
                            sf[so + h] = x[n * Wd + h]
                _delta_row(df, bias, uf, r, c0, w, softplus, k, dt, du, sig, U(0))
                y[:] = 0
                for n in range(N):
                    b_n, c_n, xo, ao = bf[bc + n], cf[bc + n], n * Wd, n * Dm + c0
                    for h in range(w):
                        xv = _decay(dt[h] * af[ao + h], k) * x[xo + h] + du[h] * b_n
                        x[xo + h] = xv
                        y[h] += xv * c_n
                _out_row(y, U(0), uf, D, zf, r, c0, w, gate, k, of)
            for n in range(N):
                for h in range(w):
                    last[b, c0 + h, n] = x[n * Wd + h]


@njit(inline="always", **JIT)
def _recompute_chunk(df, bias, uf, af, bf, cf, sf, so, r0, st, bc0, stB, nt, rev, c0, w, N, Dm, Wd, softplus,
                     k, X, dA, dt, du, sig, y):
    """A chunk's states ``X`` (``X[i + 1]`` = after step i; ``X[0]`` loaded from the saved entry state at ``sf[so]``,
    rows ``n * Dm`` apart), decay factors ``dA``, ``dt``/``du``/``sig`` and pre-gate outputs ``y`` ([T, n, W] and
    [T, W] block buffers), from the chunk's first input row ``r0`` and B/C record ``bc0`` (its later steps come
    ``st`` / ``stB`` after them, or before them when ``rev``)."""
    NW = N * Wd
    for n in range(N):
        for h in range(w):
            X[n * Wd + h] = sf[so + n * Dm + h]
    for i in range(U(nt)):
        if rev:
            r, bc = r0 - i * st, bc0 - i * stB
        else:
            r, bc = r0 + i * st, bc0 + i * stB
        iw = i * Wd
        _delta_row(df, bias, uf, r, c0, w, softplus, k, dt, du, sig, iw)
        for h in range(w):
            y[iw + h] = 0
        for n in range(N):
            b_n, c_n, ao = bf[bc + n], cf[bc + n], n * Dm + c0
            xo, eo = i * NW + n * Wd, (i + U(1)) * NW + n * Wd
            for h in range(w):
                d = _decay(dt[iw + h] * af[ao + h], k)
                dA[xo + h] = d
                xv = d * X[xo + h] + du[iw + h] * b_n
                X[eo + h] = xv
                y[iw + h] += xv * c_n


@njit(inline="always", **JIT)
def _adjoint_step(i, bf, cf, atf, bc, pc, c0, w, N, Dm, Wd, k, X, dA, dt, du, gy, G, gAb, gdu, gdtA, gbf, gcf):
    """One step of the adjoint recurrence for a block: ``G <- exp(delta' A) (G + C gy)``; accumulates
    ``gdu = dL/d(delta' u)``, ``gdtA = dL/d(delta')`` through the decay, the block's ``gA`` and the step's
    B/C gradients (at ``pc``)."""
    NW, iw = N * Wd, i * Wd
    for h in range(w):
        gdu[h] = 0
        gdtA[h] = 0
    for n in range(N):
        b_n, c_n, ao, go = bf[bc + n], cf[bc + n], n * Dm + c0, n * Wd
        xo, eo = i * NW + n * Wd, (i + U(1)) * NW + n * Wd
        sum_c = k[9]
        sum_b = k[9]
        for h in range(w):
            gv = G[go + h] + c_n * gy[h]
            sum_c += gy[h] * X[eo + h]
            sum_b += gv * du[iw + h]
            gdu[h] += gv * b_n
            q = gv * dA[xo + h] * X[xo + h]
            gdtA[h] += q * atf[ao + h]
            gAb[go + h] += q * dt[iw + h]
            G[go + h] = gv * dA[xo + h]
        gcf[pc + n] += sum_c
        gbf[pc + n] += sum_b


@njit(parallel=True, cache=True, **JIT)
def scan_backward(u, delta, z, D, bias, A2t, At, Bm, Cm, softplus, gate, batch_major, rev_group, k, chunk, width,
                  n_splits, states, gout, glast, gu, gdelta, gz, gD, gbias, gA, gBp, gCp):
    """Backward of `scan_forward`. Writes ``gu``, ``gdelta``, ``gz`` (when ``gate``; ``u``'s layout), per batch
    row ``gD``, ``gbias`` [b, d] and ``gA`` [b, d, n], per split ``gBp``/``gCp`` [S, *B.shape] (zero-initialised,
    accumulated). ``glast`` is [b, d, n] (zeros when the last state has no gradient)."""
    length, batch = _layout(u.shape, batch_major)
    dim, n_groups, n_state = u.shape[2], Bm.shape[2], Bm.shape[3]
    head = dim // n_groups
    st, sb = _strides(batch_major, length, batch, dim)
    stB, sbB = _strides(batch_major, length, batch, n_groups * n_state)
    uf, df, zf, af, atf = u.reshape(-1), delta.reshape(-1), z.reshape(-1), A2t.reshape(-1), At.reshape(-1)
    bf, cf, sf, gof = Bm.reshape(-1), Cm.reshape(-1), states.reshape(-1), gout.reshape(-1)
    guf, gdf, gzf, gbf, gcf = gu.reshape(-1), gdelta.reshape(-1), gz.reshape(-1), gBp.reshape(-1), gCp.reshape(-1)
    N, Dm, Wd = U(n_state), U(dim), U(width)
    for task in prange(batch * n_groups * n_splits):
        b, g, s, blk0, blk1 = _task_blocks(task, n_groups, n_splits, head, width)
        rev = g >= rev_group
        X = np.empty((chunk + 1) * n_state * width, u.dtype)
        dA = np.empty(chunk * n_state * width, u.dtype)
        dt = np.empty(chunk * width, u.dtype)
        du = np.empty(chunk * width, u.dtype)
        sig = np.empty(chunk * width, u.dtype)
        y = np.empty(chunk * width, u.dtype)
        G = np.empty(n_state * width, u.dtype)                # exp(delta'[t+1] A) G[t+1]
        gAb = np.empty(n_state * width, u.dtype)
        gDb, gbb, gy = np.empty(width, u.dtype), np.empty(width, u.dtype), np.empty(width, u.dtype)
        gdu, gdtA = np.empty(width, u.dtype), np.empty(width, u.dtype)
        for blk in range(blk0, blk1):
            c0 = U(g * head + blk * width)
            w = U(min(width, (g + 1) * head - (g * head + blk * width)))
            for n in range(N):
                for h in range(w):
                    G[n * Wd + h] = glast[b, c0 + h, n]
            gAb[:] = 0
            gDb[:] = 0
            gbb[:] = 0
            for kc in range(states.shape[0] - 1, -1, -1):
                t0 = kc * chunk
                nt = min(chunk, length - t0)
                p0 = _step(t0, length, rev)
                _recompute_chunk(df, bias, uf, af, bf, cf, sf, U(kc * batch + b) * N * Dm + c0,
                                 p0 * st + U(b) * sb + c0, st, p0 * stB + U(b) * sbB + U(g) * N, stB, nt, rev, c0, w,
                                 N, Dm, Wd, softplus, k, X, dA, dt, du, sig, y)
                for ii in range(nt - 1, -1, -1):  # newest step first
                    i = U(ii)
                    p = _step(t0 + ii, length, rev)
                    r = p * st + U(b) * sb + c0
                    bc = p * stB + U(b) * sbB + U(g) * N
                    _gate_back_row(gof, y, i * Wd, uf, D, zf, r, c0, w, gate, k, gy, gzf, gDb)
                    _adjoint_step(i, bf, cf, atf, bc, U(s) * U(length * batch) * U(n_groups) * N + bc, c0, w, N, Dm,
                                  Wd, k, X, dA, dt, du, gy, G, gAb, gdu, gdtA, gbf, gcf)
                    _input_back_row(gdu, gdtA, dt, sig, i * Wd, uf, D, r, c0, w, gy, softplus, guf, gdf, gbb)
            for n in range(N):
                for h in range(w):
                    gA[b, c0 + h, n] = gAb[n * Wd + h]
            for h in range(w):
                gD[b, c0 + h] = gDb[h]
                gbias[b, c0 + h] = gbb[h]


@njit(inline="always", **JIT)
def _conv_row(xf, wf, bias, r, t, b, st, sb, C, lo, hi, rev, length, kernel, out):
    """``out[r + c] = bias + sum_k wT[k] x[t - K + 1 + k]`` for channels ``lo <= c < hi`` (the pre-activation of
    one (step, batch row)); ``x[t + K - 1 - k]`` when ``rev`` (the causal conv of the time-reversed sequence)."""
    for c in range(lo, hi):
        out[r + c] = bias[c]
    for k in range(max(0, kernel - 1 - (length - 1 - t if rev else t)), kernel):
        src = t + kernel - 1 - k if rev else t - kernel + 1 + k
        rs, wo = U(src) * st + U(b) * sb, U(k) * C
        for c in range(lo, hi):
            out[r + c] += wf[wo + c] * xf[rs + c]


@njit(inline="always", **JIT)
def _conv_taps_back(ga, xf, wf, r, s, b, C, lo, hi, rev, length, kernel, gxf, gwf):
    """``x[s]``'s share of the conv backward for channels ``lo <= c < hi``: ``gx[s] += ga[t] wT[j]`` and
    ``gw[j] += ga[t] x[s]`` over the output steps ``t`` that read ``x[s]`` with tap ``j`` (``ga`` holds
    dL/d(pre-activation) per step, ``C`` apart)."""
    first = max(0, kernel - 1 - s) if rev else max(0, s + kernel - length)
    for j in range(first, kernel):
        t = s - (kernel - 1 - j) if rev else s + kernel - 1 - j
        qt, wo, gwo = U(t) * C, U(j) * C, U(b * kernel + j) * C
        for c in range(lo, hi):
            gxf[r + c] += ga[qt + c] * wf[wo + c]
            gwf[gwo + c] += ga[qt + c] * xf[r + c]


@njit(parallel=True, cache=True, **JIT)
def conv_forward(x, wT, bias, batch_major, rev_from, k, out):
    """``silu`` of the causal depthwise conv1d of ``x`` [L, b, c] (or [b, L, c] when ``batch_major``; ``out``
    alike) with ``wT`` [K, c] (the weight transposed) and ``bias`` [c]: ``out[t] = silu(bias + sum_k wT[k]
    x[t - K + 1 + k])`` (terms before the start left out); channels from ``rev_from`` on read ``x[t + K - 1 - k]``
    (terms past the end left out: the conv of the time-reversed sequence); ``k``: `constants`."""
    length, batch = _layout(x.shape, batch_major)
    chans, kernel = x.shape[2], wT.shape[0]
    st, sb = _strides(batch_major, length, batch, chans)
    xf, of, wf = x.reshape(-1), out.reshape(-1), wT.reshape(-1)
    C, R = U(chans), U(rev_from)
    for b in prange(batch):
        for t in range(length):
            r = U(t) * st + U(b) * sb
            _conv_row(xf, wf, bias, r, t, b, st, sb, C, U(0), R, False, length, kernel, of)
            _conv_row(xf, wf, bias, r, t, b, st, sb, C, R, C, True, length, kernel, of)
            for c in range(C):
                a = of[r + c]
                of[r + c] = a * _sigmoid(a, k)


@njit(parallel=True, cache=True, **JIT)
def conv_backward(x, wT, bias, gout, batch_major, rev_from, k, gx, gw_rows, gb_rows):
    """Backward of `conv_forward` (the pre-activation recomputed, one ``[L, c]`` buffer per batch row): ``gx``
    (``x``'s layout); per batch row the weight gradient ``gw_rows`` [b, K, c] and the bias gradient ``gb_rows``
    [b, c]."""
    length, batch = _layout(x.shape, batch_major)
    chans, kernel = x.shape[2], wT.shape[0]
    st, sb = _strides(batch_major, length, batch, chans)
    xf, gof, gxf, wf, gwf, gbf = x.reshape(-1), gout.reshape(-1), gx.reshape(-1), wT.reshape(-1), \
        gw_rows.reshape(-1), gb_rows.reshape(-1)
    C, R = U(chans), U(rev_from)
    for b in prange(batch):
        ga = np.empty(length * chans, x.dtype)  # dL / d(pre-activation), this row's steps
        for t in range(length):
            r, q = U(t) * st + U(b) * sb, U(t) * C
            _conv_row(xf, wf, bias, q, t, b, st, sb, C, U(0), R, False, length, kernel, ga)  # ga[q:] = a, then:
            _conv_row(xf, wf, bias, q, t, b, st, sb, C, R, C, True, length, kernel, ga)
            for c in range(C):
                sg = _sigmoid(ga[q + c], k)
                ga[q + c] = gof[r + c] * sg * (k[18] + ga[q + c] * (k[18] - sg))
        gw_rows[b] = 0
        gb_rows[b] = 0
        bo = U(b) * C
        for s in range(length):
            r, q = U(s) * st + U(b) * sb, U(s) * C
            for c in range(C):
                gxf[r + c] = 0
                gbf[bo + c] += ga[q + c]
            _conv_taps_back(ga, xf, wf, r, s, b, C, U(0), R, False, length, kernel, gxf, gwf)
            _conv_taps_back(ga, xf, wf, r, s, b, C, R, C, True, length, kernel, gxf, gwf)


def numba_version() -> str:
    return numba.__version__


def max_threads() -> int:
    """numba's thread pool size (``NUMBA_NUM_THREADS``, default: the machine's CPU count)."""
    return numba.config.NUMBA_NUM_THREADS


def set_threads(threads: int) -> None:
    numba.set_num_threads(threads)
