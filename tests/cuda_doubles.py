"""Test doubles of the fused CUDA kernels raycad calls, runnable on CPU.

`selective_scan_fn` has the signature of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``
(mamba-ssm 2.x) and `causal_conv1d_fn` that of ``causal_conv1d.causal_conv1d_fn`` (causal-conv1d 1.4+). Each
does what the real Python wrapper does (``.contiguous()`` where the last dim is strided, 3-D B/C to one
group) and then enforces what the real C++ entry points check with ``TORCH_CHECK`` (``selective_scan_fwd``
/ ``selective_scan_bwd``, ``causal_conv1d_fwd`` / ``causal_conv1d_bwd``): dtypes (u, delta, z and
input-dependent B/C in one dtype; A, D and delta_bias float32; conv bias in the weight's dtype), shapes (B/C as
``[batch, groups, dstate, length]``, groups dividing dim; conv width 2..4), last-dim contiguity and the
channel-last rules. A failed check raises ``RuntimeError`` as ``TORCH_CHECK`` does. They skip only the
``is_cuda`` checks. The numbers come from raycad's sequential reference scan and from ``F.conv1d``; the
backward passes recompute them with autograd and return gradients in the dtypes the kernels return.

`install(monkeypatch)` puts them into ``sys.modules`` as ``mamba_ssm.ops.selective_scan_interface`` and
``causal_conv1d`` (optionally only the scan) and makes `raycad.model.kernels` route CPU tensors through them.
"""

from __future__ import annotations

import sys
import types
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

from raycad.model.scan import selective_scan_reference

CALLS: Counter[str] = Counter()
"""How often each double ran (``scan_fwd``, ``scan_bwd``, ``conv_fwd``, ``conv_bwd``)."""
SCAN_ARGS: list[dict[str, object]] = []
"""The dtypes and delta_bias of every forward call of the scan double (the last ones are kept)."""

_INPUT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"(kernel double) check failed: {message}")


def _last_dim_ok(t: Tensor) -> bool:
    return t.stride(-1) == 1 or t.size(-1) == 1


# ---- mamba_ssm selective scan ----------------------------------------------------------------------------------


def _scan_checks(u, delta, A, B, C, D, z, delta_bias) -> None:
    """``selective_scan_fwd``'s TORCH_CHECKs (real A only; no is_cuda)."""
    itype = u.dtype
    _check(itype in _INPUT_TYPES, f"u dtype {itype} must be float32, float16 or bfloat16")
    _check(A.dtype == torch.float32, f"A dtype {A.dtype} must be float32")
    _check(delta.dtype == itype, f"delta dtype {delta.dtype} != u dtype {itype}")
    for name, M in (("B", B), ("C", C)):
        want = itype if M.dim() >= 3 else A.dtype
        _check(M.dtype == want, f"{name} dtype {M.dtype} != {want}")
    _check(_last_dim_ok(u) and _last_dim_ok(delta), "u and delta need stride 1 in the last dim")
    batch, dim, length = u.shape
    dstate = A.shape[1]
    _check(dstate <= 256, "selective_scan only supports state dimension <= 256")
    _check(tuple(delta.shape) == (batch, dim, length), f"delta shape {tuple(delta.shape)}")
    _check(tuple(A.shape) == (dim, dstate), f"A shape {tuple(A.shape)}")
    groups = B.shape[1] if B.dim() >= 3 else 1
    _check(dim % groups == 0, f"dim {dim} not divisible by {groups} groups")
    for name, M in (("B", B), ("C", C)):
        if M.dim() >= 3:
            _check(tuple(M.shape) == (batch, groups, dstate, length),
                   f"{name} shape {tuple(M.shape)} != {(batch, groups, dstate, length)}")
            _check(_last_dim_ok(M), f"{name} needs stride 1 in the last dim")
        else:
            _check(tuple(M.shape) == (dim, dstate), f"{name} shape {tuple(M.shape)}")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None:
            _check(v.dtype == torch.float32, f"{name} dtype {v.dtype} must be float32")
            _check(_last_dim_ok(v) and tuple(v.shape) == (dim,), f"{name} must be [dim] with stride 1")
    if z is not None:
        _check(z.dtype == itype, f"z dtype {z.dtype} != u dtype {itype}")
        _check(_last_dim_ok(z) and tuple(z.shape) == (batch, dim, length), "z must be [batch, dim, length], stride 1")


class _SelectiveScanDouble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        # the Python wrapper (SelectiveScanFn.forward)
        u = u if u.stride(-1) == 1 else u.contiguous()
        delta = delta if delta.stride(-1) == 1 else delta.contiguous()
        D = D.contiguous() if D is not None else None
        B = B if B.stride(-1) == 1 else B.contiguous()
        C = C if C.stride(-1) == 1 else C.contiguous()
        z = z if z is None or z.stride(-1) == 1 else z.contiguous()
        ctx.squeeze_B, ctx.squeeze_C = B.dim() == 3, C.dim() == 3
        B = B.unsqueeze(1) if B.dim() == 3 else B
        C = C.unsqueeze(1) if C.dim() == 3 else C
        _scan_checks(u, delta, A, B, C, D, z, delta_bias)  # the C++ entry point
        CALLS["scan_fwd"] += 1
        SCAN_ARGS.append({"u": u.dtype, "delta": delta.dtype, "B": B.dtype, "C": C.dtype,
                          "z": None if z is None else z.dtype,
                          "delta_bias": None if delta_bias is None else delta_bias.detach().clone()})
        del SCAN_ARGS[:-8]
        with torch.autocast(u.device.type, enabled=False):
            out, last = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                 return_last_state=True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        ctx.mark_non_differentiable(last)
        return (out, last) if return_last_state else out

    @staticmethod
    def backward(ctx, dout, *_):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        dout = dout if dout.stride(-1) == 1 else dout.contiguous()
        _check(dout.dtype == u.dtype, f"dout dtype {dout.dtype} != u dtype {u.dtype}")  # selective_scan_bwd
        _scan_checks(u, delta, A, B, C, D, z, delta_bias)
        CALLS["scan_bwd"] += 1
        inputs = [t if t is None else t.detach().requires_grad_() for t in (u, delta, A, B, C, D, z, delta_bias)]
        with torch.enable_grad(), torch.autocast(u.device.type, enabled=False):
            out = selective_scan_reference(*inputs, delta_softplus=ctx.delta_softplus)
            wanted = [t for t in inputs if t is not None]
            grads = iter(torch.autograd.grad(out, wanted, dout, allow_unused=True))
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = (None if t is None else next(grads) for t in inputs)
        dB = dB.squeeze(1) if ctx.squeeze_B else dB
        dC = dC.squeeze(1) if ctx.squeeze_C else dC
        return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None, None


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """mamba_ssm 2.x ``selective_scan_fn``; with return_last_state, returns (out, last_state)."""
    return _SelectiveScanDouble.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


# ---- causal_conv1d ----------------------------------------------------------------------------------------------


def _conv_checks(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """``causal_conv1d_fwd``'s TORCH_CHECKs (no seq_idx / states; no is_cuda)."""
    _check(x.dtype in _INPUT_TYPES, f"x dtype {x.dtype} must be float32, float16 or bfloat16")
    _check(weight.dtype in _INPUT_TYPES, f"weight dtype {weight.dtype} must be float32, float16 or bfloat16")
    _check(x.dim() == 3, f"x must be [batch, dim, seqlen], got {tuple(x.shape)}")
    dim, width = x.shape[1], weight.shape[-1]
    _check(tuple(weight.shape) == (dim, width), f"weight shape {tuple(weight.shape)} != {(dim, width)}")
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x needs stride 1 in the length or the channel dim")
    if x.stride(1) == 1 and x.stride(2) > 1:  # channel-last layout
        _check(dim % 8 == 0, "causal_conv1d only supports channel dimension divisible by 8 for now")
        _check(x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0, "channel-last strides must be multiples of 8")
    _check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    if bias is not None:
        _check(bias.dtype == weight.dtype, f"bias dtype {bias.dtype} != weight dtype {weight.dtype}")
        _check(bias.stride(-1) == 1 and tuple(bias.shape) == (dim,), "bias must be [dim] with stride 1")


def _conv_reference(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    dim, width = weight.shape
    out = F.conv1d(x.float(), weight.float()[:, None], None if bias is None else bias.float(),
                   padding=width - 1, groups=dim)[..., : x.shape[-1]]
    return (F.silu(out) if silu else out).to(x.dtype)


class _CausalConv1dDouble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        x = x.contiguous() if x.stride(2) != 1 and x.stride(1) != 1 else x  # the Python wrapper
        bias = bias.contiguous() if bias is not None else None
        _conv_checks(x, weight, bias)
        CALLS["conv_fwd"] += 1
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        with torch.autocast(x.device.type, enabled=False):
            return _conv_reference(x, weight, bias, silu)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        _check(tuple(dout.shape) == tuple(x.shape), f"dout shape {tuple(dout.shape)}")
        _conv_checks(x, weight, bias)
        CALLS["conv_bwd"] += 1
        inputs = [t if t is None else t.detach().requires_grad_() for t in (x, weight, bias)]
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            out = _conv_reference(*inputs, ctx.silu)
            wanted = [t for t in inputs if t is not None]
            grads = iter(torch.autograd.grad(out, wanted, dout.to(out.dtype)))
        dx, dweight, dbias = (None if t is None else next(grads) for t in inputs)
        # causal_conv1d_bwd returns dweight and dbias in float32 (autograd casts them to the inputs' dtypes)
        return dx, dweight.float(), None if dbias is None else dbias.float(), None


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """causal-conv1d 1.4+ ``causal_conv1d_fn``: x [batch, dim, seqlen], weight [dim, width], bias [dim]."""
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu, or swish")
    if seq_idx is not None or initial_states is not None or return_final_states or final_states_out is not None:
        raise NotImplementedError("the test double covers the calls raycad makes (no seq_idx / states)")
    return _CausalConv1dDouble.apply(x, weight, bias, activation in ("silu", "swish"))


# ---- installing them -------------------------------------------------------------------------------------------


def install(monkeypatch, conv: bool = True) -> None:
    """Make the doubles the installed kernels and route CPU tensors through them (undone by ``monkeypatch``)."""
    from raycad.model import kernels, scan

    mamba = types.ModuleType("mamba_ssm")
    ops = types.ModuleType("mamba_ssm.ops")
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = selective_scan_fn
    mamba.ops, ops.selective_scan_interface = ops, interface
    modules = {"mamba_ssm": mamba, "mamba_ssm.ops": ops, "mamba_ssm.ops.selective_scan_interface": interface}
    if conv:
        conv_module = types.ModuleType("causal_conv1d")
        conv_module.causal_conv1d_fn = causal_conv1d_fn
        modules["causal_conv1d"] = conv_module
    else:
        monkeypatch.setitem(sys.modules, "causal_conv1d", None)  # import raises ImportError
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(kernels, "FUSED_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(scan, "_logged_paths", set())
    monkeypatch.delenv("RAYCAD_SELECTIVE_SCAN", raising=False)
    kernels.installed_kernels.cache_clear()  # the caller clears it again after the test (see the fixture)
    CALLS.clear()
    SCAN_ARGS.clear()
