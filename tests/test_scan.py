"""The chunked and the fused selective scans against the sequential reference: outputs, last state and every
gradient; the dispatch and the fused scan's fallback when numba is missing."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raycad.model import scan
from raycad.model.scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_fused,
    selective_scan_reference,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b=2, d=6, n=4, l=19, bc="variable", dtype=torch.float32, seed=0, delta_scale=0.5):
    """Random scan inputs shaped like a Mamba layer's (A = -exp(A_log) < 0), all requiring grad."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    if bc == "variable":
        B, C = rand(b, n, l), rand(b, n, l)
    elif bc == "grouped":
        B, C = rand(b, 2, n, l), rand(b, 2, n, l)
    else:
        B, C = rand(d, n), rand(d, n)
    A = -torch.exp(rand(d, n, scale=0.5) + 1.0)
    # delta >= 0 (as after softplus), so the scan also stays bounded when delta_softplus is off.
    tensors = {"u": rand(b, d, l), "delta": rand(b, d, l, scale=delta_scale).abs(), "A": A, "B": B, "C": C,
               "D": rand(d), "z": rand(b, d, l), "delta_bias": rand(d, scale=0.5).abs()}
    return {k: v.requires_grad_() for k, v in tensors.items()}


def run(fn, inputs, use, softplus, last, seed=1, **kw):
    """Output, last state and gradients of a random projection of (output, last state)."""
    args = {k: v for k, v in inputs.items() if k in ("u", "delta", "A", "B", "C") or k in use}
    res = fn(**args, delta_softplus=softplus, return_last_state=last, **kw)
    out, state = res if last else (res, None)
    g = torch.Generator().manual_seed(seed)
    loss = (out.double() * torch.randn(out.shape, generator=g, dtype=torch.float64)).sum()
    if state is not None:
        loss = loss + (state.double() * torch.randn(state.shape, generator=g, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, list(args.values()))
    results = {"out": out, **dict(zip(args, grads))}
    if state is not None:
        results["last_state"] = state
    return results


def assert_close(got: dict, want: dict, rtol=1e-4):
    assert got.keys() == want.keys()
    for name, ref in want.items():
        scale = ref.abs().max().item() + 1e-12
        err = (got[name].double() - ref.double()).abs().max().item() / scale
        assert err <= rtol, f"{name}: max error {err:.2e} relative to max |ref| {scale:.3g}"


@pytest.mark.parametrize(
    "use,softplus,last",
    [
        ((), False, False),
        (("D",), False, True),
        (("z",), True, False),
        (("delta_bias",), True, True),
        (("D", "z", "delta_bias"), True, True),
    ],
)
@pytest.mark.parametrize("bc", ["variable", "grouped", "constant"])
def test_chunked_matches_reference(use, softplus, last, bc):
    inputs = make_inputs(l=19, bc=bc)  # 19 = 2 full chunks of 8 + a partial one
    want = run(selective_scan_reference, inputs, use, softplus, last)
    got = run(selective_scan_chunked, inputs, use, softplus, last, chunk=8)
    assert_close(got, want)


@pytest.mark.parametrize("length,chunk", [(1, 8), (1, 1), (8, 8), (33, 4), (20, 64)])
def test_lengths_and_chunks(length, chunk):
    inputs = make_inputs(b=3, d=5, n=3, l=length, seed=length)
    use = ("D", "z", "delta_bias")
    want = run(selective_scan_reference, inputs, use, True, True)
    assert_close(run(selective_scan_chunked, inputs, use, True, True, chunk=chunk), want)


def test_default_chunk_model_shape():
    """A model-like shape (d_inner 64, n 16, length 200) with the default chunk size."""
    inputs = make_inputs(b=2, d=64, n=16, l=200, seed=3)
    use = ("D", "z", "delta_bias")
    want = run(selective_scan_reference, inputs, use, True, False)
    assert_close(run(selective_scan_chunked, inputs, use, True, False), want)


def test_gradcheck_float64():
    inputs = {k: v.detach().double().requires_grad_() for k, v in make_inputs(b=2, d=3, n=2, l=7).items()}

    def fn(u, delta, A, B, C, D, z, delta_bias):
        out, last = selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                           return_last_state=True, chunk=3)
        return out, last

    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES), eps=1e-6, atol=1e-7)


def test_stable_for_large_delta_times_A():
    """delta' |A| in the hundreds (state forgotten in one step) stays finite and exact."""
    inputs = make_inputs(b=2, d=4, n=8, l=40, delta_scale=30.0, seed=5)
    with torch.no_grad():
        inputs["A"].mul_(20.0)
        inputs["delta_bias"].add_(10.0)
    use = ("D", "z", "delta_bias")
    want = run(selective_scan_reference, inputs, use, True, True)
    got = run(selective_scan_chunked, inputs, use, True, True, chunk=16)
    for name, value in got.items():
        assert torch.isfinite(value).all(), name
    assert_close(got, want)


def test_dtypes_and_no_grad():
    inputs = make_inputs(l=12)
    with torch.no_grad():
        want = selective_scan_reference(**inputs, delta_softplus=True)
        got = selective_scan_chunked(**inputs, delta_softplus=True, chunk=5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    bf16 = {k: v.detach().bfloat16() for k, v in inputs.items()}
    out, last = selective_scan_chunked(**bf16, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert last.shape == (2, 6, 4)


def test_partial_requires_grad():
    """Only some inputs need gradients (frozen layers): the others get None."""
    inputs = {k: v.detach() for k, v in make_inputs(l=10).items()}
    u = inputs["u"].requires_grad_()
    out = selective_scan_chunked(**inputs, delta_softplus=True, chunk=4)
    (grad,) = torch.autograd.grad(out.sum(), [u])
    ref_u = inputs["u"].detach().requires_grad_()
    ref = selective_scan_reference(**{**inputs, "u": ref_u}, delta_softplus=True)
    (want,) = torch.autograd.grad(ref.sum(), [ref_u])
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(
    b=st.integers(1, 3), d=st.sampled_from([2, 4, 6]), n=st.integers(1, 5), l=st.integers(1, 30),
    chunk=st.integers(1, 12), bc=st.sampled_from(["variable", "grouped", "constant"]),
    softplus=st.booleans(), seed=st.integers(0, 10_000),
)
def test_random_shapes(b, d, n, l, chunk, bc, softplus, seed):
    inputs = make_inputs(b=b, d=d, n=n, l=l, bc=bc, seed=seed)
    use = ("D", "z", "delta_bias")
    want = run(selective_scan_reference, inputs, use, softplus, True)
    assert_close(run(selective_scan_chunked, inputs, use, softplus, True, chunk=chunk), want)


def test_bad_shapes_raise():
    x = make_inputs(l=5)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan_chunked(x["u"], x["delta"], x["A"][:3], x["B"], x["C"])
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_chunked(x["u"], x["delta"], x["A"], x["B"][..., :4], x["C"])
    with pytest.raises(ValueError, match="u and delta"):
        selective_scan_reference(x["u"], x["delta"][:, :, :4], x["A"], x["B"], x["C"])
    grouped = torch.randn(2, 4, 4, 5)  # 4 groups do not divide d = 6
    with pytest.raises(ValueError, match="divisible"):
        selective_scan_chunked(x["u"], x["delta"], x["A"], grouped, grouped)


def test_dispatch_and_log_once(monkeypatch, caplog):
    monkeypatch.setattr(scan, "_logged_paths", set())
    monkeypatch.delenv("RAYCAD_SELECTIVE_SCAN", raising=False)
    default = "fused" if scan.fused_available() else "chunked"
    assert scan.scan_path(torch.device("cpu")) == default
    x = {k: v.detach() for k, v in make_inputs(l=6).items()}
    with caplog.at_level(logging.INFO, logger="raycad"):
        first = selective_scan(**x, delta_softplus=True)
        selective_scan(**x, delta_softplus=True)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("selective scan:")]
    assert messages == [f"selective scan: using the {default} path (cpu tensors)"]
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "reference")
    torch.testing.assert_close(selective_scan(**x, delta_softplus=True), first, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "mamba_ssm")
    with pytest.raises(RuntimeError, match="CUDA"):
        selective_scan(**x)
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "fastest")
    with pytest.raises(ValueError, match="RAYCAD_SELECTIVE_SCAN"):
        selective_scan(**x)


def test_configured_impl_wins_over_environment(monkeypatch):
    monkeypatch.setattr(scan, "_configured", "auto")
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "reference")
    assert scan.scan_path() == "reference"
    scan.set_scan_impl("chunked")
    assert scan.scan_path() == "chunked"
    with pytest.raises(ValueError, match="fastest"):
        scan.set_scan_impl("fastest")


# ---- the fused CPU scan (numba) ---------------------------------------------------------------------------------

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(
    not HAVE_NUMBA, reason="numba is not installed, so the fused CPU scan cannot run (its fallback to the chunked "
                           "scan is tested by test_fused_fallback_without_numba)")


@contextlib.contextmanager
def fused_blocks(chunk: int, width: int):
    """Small chunks / channel blocks, so short test sequences cross chunk and block boundaries."""
    saved = scan.FUSED_CHUNK, scan.FUSED_WIDTH, scan.FUSED_SPLIT_WIDTH
    scan.FUSED_CHUNK, scan.FUSED_WIDTH, scan.FUSED_SPLIT_WIDTH = chunk, width, width
    try:
        yield
    finally:
        scan.FUSED_CHUNK, scan.FUSED_WIDTH, scan.FUSED_SPLIT_WIDTH = saved


def time_major(inputs: dict) -> dict:
    """The same inputs as ``[b, d, l]`` / ``[b, (g,) n, l]`` views of time-major storage (as the chunked model's)."""
    def view(v):
        if v.dim() < 3:
            return v
        order = (v.dim() - 1, *range(v.dim() - 1))
        return v.detach().permute(order).contiguous().permute(*range(1, v.dim()), 0).requires_grad_()
    return {k: view(v) for k, v in inputs.items()}


def stored_time_major(out: torch.Tensor) -> bool:
    return out.permute(2, 0, 1).is_contiguous()


@needs_numba
@pytest.mark.parametrize(
    "use,softplus,last",
    [((), False, False), (("D",), False, True), (("z", "delta_bias"), True, False), (("D", "z", "delta_bias"), True, True)],
)
@pytest.mark.parametrize("bc", ["variable", "grouped", "constant"])
def test_fused_matches_reference(use, softplus, last, bc):
    inputs = make_inputs(d=10, l=19, bc=bc)
    want = run(selective_scan_reference, inputs, use, softplus, last)
    with fused_blocks(chunk=8, width=4):  # 19 steps = 2 chunks + 3; 5 channels per group = a block + 1
        assert_close(run(selective_scan_fused, inputs, use, softplus, last), want, rtol=1e-5)


def reference_reversed(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, reverse_groups=0):
    """`selective_scan_reference` with the last ``reverse_groups`` B/C groups run on time-flipped copies of their
    inputs, the output flipped back: what the fused kernels' backward walk must equal."""
    groups = B.shape[1] if B.dim() == 4 else 1
    first = u.shape[1] - u.shape[1] // groups * reverse_groups   # first reversed channel

    def flip(t, dim=1, start=first):
        if t is None:
            return None
        return torch.cat([t.narrow(dim, 0, start), t.narrow(dim, start, t.shape[dim] - start).flip(-1)], dim)

    B_, C_ = ((flip(M, 1, groups - reverse_groups) if M.dim() == 4 else (M.flip(-1) if reverse_groups else M))
              for M in (B, C))
    res = selective_scan_reference(flip(u), flip(delta), A, B_, C_, D, flip(z), delta_bias, delta_softplus,
                                   return_last_state)
    return (flip(res[0]), res[1]) if return_last_state else flip(res)


@needs_numba
@pytest.mark.parametrize("reverse_groups,bc", [(1, "grouped"), (2, "grouped"), (1, "variable")])
@pytest.mark.parametrize("tm", [False, True])
def test_fused_reverse_groups_walk_time_backwards(reverse_groups, bc, tm):
    """``reverse_groups`` (the bidirectional mixer's reverse direction without flipped copies): output, last state
    and every gradient equal the reference scan of time-flipped inputs, flipped back; both kernel layouts."""
    inputs = make_inputs(d=10, l=19, bc=bc, seed=reverse_groups)
    inputs = time_major(inputs) if tm else inputs
    use = ("D", "z", "delta_bias")
    want = run(reference_reversed, inputs, use, True, True, reverse_groups=reverse_groups)
    with fused_blocks(chunk=8, width=4):  # 19 steps = 2 chunks + 3; 5 channels per group = a block + 1
        got = run(selective_scan_fused, inputs, use, True, True, reverse_groups=reverse_groups)
    assert_close(got, want, rtol=1e-5)
    forward_only = run(selective_scan_reference, inputs, use, True, True)
    assert (got["out"] - forward_only["out"]).abs().max() > 1e-2  # the reversed channels did walk backwards
    with pytest.raises(ValueError, match="reverse_groups"):
        selective_scan_fused(**{k: inputs[k] for k in ("u", "delta", "A", "B", "C")}, reverse_groups=3)


@needs_numba
def test_fused_reverse_gradcheck_float64():
    inputs = {k: v.detach().double().requires_grad_() for k, v in make_inputs(b=2, d=4, n=2, l=7, bc="grouped").items()}

    def fn(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True, return_last_state=True,
                                    reverse_groups=1)

    with fused_blocks(chunk=3, width=1):
        assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES), eps=1e-6, atol=1e-7)


@needs_numba
@pytest.mark.parametrize("length", [1, 65])
@pytest.mark.parametrize("layout", ["batch_major", "time_major"])
def test_fused_default_blocks_model_shape(length, layout):
    """Default chunk (32: 65 steps = 2 chunks + 1) and blocks (a whole group of 70 channels), n = 16, in both
    kernel layouts (chosen by the storage of ``u``; the output is a view of the layout used)."""
    inputs = make_inputs(b=2, d=140, n=16, l=length, bc="grouped", seed=length)
    if layout == "time_major":
        inputs = time_major(inputs)
    use = ("D", "z", "delta_bias")
    got = run(selective_scan_fused, inputs, use, True, True)
    assert stored_time_major(got["out"]) == (layout == "time_major" or length == 1)  # L = 1: both layouts
    assert_close(got, run(selective_scan_reference, inputs, use, True, True), rtol=1e-5)


@needs_numba
def test_fused_threads_split_channels():
    """One (row, group) pair on 2 threads: channels split into parallel tasks whose B/C gradients are summed."""
    assert scan._fused_splits(batch=1, groups=1, head=256, threads=2) == 4
    assert scan._fused_splits(batch=8, groups=2, head=256, threads=2) == 1
    inputs = make_inputs(b=1, d=24, n=4, l=30, seed=7)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with fused_blocks(chunk=8, width=4):
            got = run(selective_scan_fused, inputs, ("D", "z"), True, True)
    finally:
        torch.set_num_threads(threads)
    assert_close(got, run(selective_scan_reference, inputs, ("D", "z"), True, True), rtol=1e-5)


@needs_numba
@pytest.mark.parametrize("tm", [False, True])
def test_fused_gradcheck_float64(tm):
    inputs = {k: v.detach().double().requires_grad_() for k, v in make_inputs(b=2, d=4, n=2, l=7, bc="grouped").items()}
    inputs = time_major(inputs) if tm else inputs

    def fn(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True, return_last_state=True)

    with fused_blocks(chunk=3, width=1):
        assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES), eps=1e-6, atol=1e-7)


def assert_fused_finite_and_exact(inputs, chunk: int, width: int) -> None:
    """The fused scan with D, z and delta_bias (blocks of ``chunk`` steps, ``width`` channels): every output
    and gradient finite and equal to the reference's to 1e-5."""
    use = ("D", "z", "delta_bias")
    with fused_blocks(chunk=chunk, width=width):
        got = run(selective_scan_fused, inputs, use, True, True)
    for name, value in got.items():
        assert torch.isfinite(value).all(), name
    assert_close(got, run(selective_scan_reference, inputs, use, True, True), rtol=1e-5)


@needs_numba
def test_fused_stable_for_large_delta_times_A():
    """delta' |A| in the hundreds: the float32 exp flushes below 2^-126 and everything stays finite and exact."""
    inputs = make_inputs(b=2, d=4, n=8, l=40, delta_scale=30.0, seed=5)
    with torch.no_grad():
        inputs["A"].mul_(20.0)
        inputs["delta_bias"].add_(10.0)
    assert_fused_finite_and_exact(inputs, chunk=16, width=64)


@needs_numba
def test_fused_extreme_gate_and_softplus_inputs():
    """The float32 kernels' own exp, sigmoid and softplus at the ends of their range: z and delta + delta_bias
    from -90 to 90 (softplus' linear branch above 20, sigmoid saturating) stay finite and match the reference."""
    inputs = make_inputs(b=2, d=6, n=4, l=24, seed=11)
    with torch.no_grad():
        ramp = torch.linspace(-90, 90, 2 * 6 * 24).view(2, 6, 24)
        inputs["z"].copy_(ramp.flip(-1))
        inputs["delta"].copy_(ramp)
    assert_fused_finite_and_exact(inputs, chunk=8, width=4)


@needs_numba
def test_fused_low_precision_and_no_grad():
    inputs = {k: v.detach() for k, v in make_inputs(l=12).items()}
    with torch.no_grad():
        torch.testing.assert_close(selective_scan_fused(**inputs, delta_softplus=True),
                                   selective_scan_reference(**inputs, delta_softplus=True), rtol=1e-5, atol=1e-5)
    for dtype in (torch.bfloat16, torch.float16):
        low = {k: v.to(dtype) for k, v in inputs.items()}
        out, last = selective_scan_fused(**low, delta_softplus=True, return_last_state=True)
        want, want_last = selective_scan_chunked(**low, delta_softplus=True, return_last_state=True)
        assert out.dtype == dtype and last.dtype == torch.float32
        torch.testing.assert_close(out, want)  # both compute in float32 and round once
        torch.testing.assert_close(last, want_last, rtol=1e-5, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(
    b=st.integers(1, 3), d=st.sampled_from([2, 4, 6, 10]), n=st.integers(1, 5), l=st.integers(1, 30),
    chunk=st.integers(1, 12), width=st.integers(1, 8), bc=st.sampled_from(["variable", "grouped"]),
    softplus=st.booleans(), seed=st.integers(0, 10_000), tm=st.booleans(),
)
@needs_numba
def test_fused_random_shapes(b, d, n, l, chunk, width, bc, softplus, seed, tm):
    inputs = make_inputs(b=b, d=d, n=n, l=l, bc=bc, seed=seed)
    inputs = time_major(inputs) if tm else inputs
    use = ("D", "z", "delta_bias")
    want = run(selective_scan_reference, inputs, use, softplus, True)
    with fused_blocks(chunk, width):
        assert_close(run(selective_scan_fused, inputs, use, softplus, True), want, rtol=1e-5)


@needs_numba
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_fused_kernels_get_ready_when_first_called_for_inference(context, monkeypatch):
    """An inference actor's first model call runs without gradients; the fused path must still be chosen."""
    monkeypatch.setattr(scan, "_configured", "auto")
    monkeypatch.delenv("RAYCAD_SELECTIVE_SCAN", raising=False)
    scan._fused_kernels.cache_clear()
    try:
        with context():
            assert scan.fused_available() and scan.scan_path() == "fused"
    finally:
        scan._fused_kernels.cache_clear()


def test_fused_fallback_without_numba(monkeypatch, caplog):
    """With numba unimportable, auto falls back to the chunked scan (logged once); an explicit fused raises."""
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "raycad.model._scan_numba", raising=False)
    monkeypatch.setattr(scan, "_logged_paths", set())
    monkeypatch.setattr(scan, "_configured", "auto")
    monkeypatch.delenv("RAYCAD_SELECTIVE_SCAN", raising=False)
    scan._kernel_module.cache_clear()
    scan._fused_kernels.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="raycad"):
            assert not scan.fused_available()
            assert scan.scan_path() == "chunked"
            x = make_inputs(l=9)
            out = selective_scan(**x, delta_softplus=True)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "fused selective scan unavailable (ModuleNotFoundError" in warnings[0]
        assert "using the chunked scan" in warnings[0]
        assert_close({"out": out}, {"out": selective_scan_reference(**x, delta_softplus=True)})
        scan.set_scan_impl("fused")
        with pytest.raises(RuntimeError, match="numba"):
            scan.scan_path()
        with pytest.raises(RuntimeError, match="numba"):
            selective_scan_fused(**x)
    finally:
        scan._kernel_module.cache_clear()
        scan._fused_kernels.cache_clear()


def test_model_scan_impl_config_reaches_the_scan(monkeypatch):
    """``model.scan_impl`` of the run config selects the path in the process that builds the model."""
    from raycad.config import ConfigError, FinetuneConfig
    from raycad.train.build import build_model

    monkeypatch.setattr(scan, "_configured", "auto")
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "reference")
    cfg = FinetuneConfig().with_overrides({"model.scan_impl": "chunked", "model.overrides": {"n_layer": 1}})
    build_model(cfg, 2)
    assert scan.scan_path() == "chunked"
    with pytest.raises(ConfigError, match="scan_impl"):
        FinetuneConfig().with_overrides({"model.scan_impl": "fastest"})


@needs_numba
@pytest.mark.parametrize("length,batch_major,reverse_from", [(1, False, None), (2, False, None), (9, False, None),
                                                             (9, True, None), (2, False, 2), (9, True, 2)])
def test_fused_depthwise_conv_matches_pytorch(monkeypatch, length, batch_major, reverse_from):
    """The numba depthwise causal conv + SiLU (used when the scan runs fused) against the shifted multiply-adds
    and F.silu, on time-major storage and on the [L, B, C] view of batch-major storage (the fused mixer's):
    float64 to 1e-12 and gradcheck, float32 (the kernels' own exp) to 1e-5. With ``reverse_from`` the channels
    from it on walk time backwards in the kernel; the PyTorch path flips them around a causal conv."""
    from raycad.model import modeling

    def _causal_conv_silu(*args):
        return modeling._causal_conv_silu(*args, reverse_from=reverse_from)

    g = torch.Generator().manual_seed(length)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) * 3 for s in ((length, 3, 5), (5, 4), (5,)))
    if batch_major:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)

    def value_and_grads(impl, dtype=torch.float64):
        monkeypatch.setattr(scan, "_configured", impl)
        args = [(t.detach().to(dtype) if t is x else t.to(dtype)).requires_grad_() for t in (x, w, b)]
        out = _causal_conv_silu(*args)
        if impl == "fused" and length > 1:
            assert out.transpose(0, 1).is_contiguous() == batch_major
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), args)
        return {"out": out, **dict(zip(("x", "w", "b"), grads))}

    assert_close(value_and_grads("fused"), value_and_grads("chunked"), rtol=1e-12)
    if reverse_from is not None and length > 1:  # the reversed channels differ from the causal conv's, the rest not
        plain = modeling._causal_conv_silu(x, w, b)
        assert torch.equal(_causal_conv_silu(x, w, b)[..., :reverse_from], plain[..., :reverse_from])
        assert (_causal_conv_silu(x, w, b)[..., reverse_from:] - plain[..., reverse_from:]).abs().max() > 1e-2
    assert_close(value_and_grads("fused", torch.float32), value_and_grads("chunked", torch.float32), rtol=1e-5)
    inputs = tuple(t.float().requires_grad_() for t in (x, w, b))
    monkeypatch.setattr(scan, "_configured", "fused")
    assert torch.autograd.gradcheck(lambda *a: _causal_conv_silu(*a).double(), tuple(t.double().requires_grad_()
                                    for t in (x, w, b)), eps=1e-6, atol=1e-7)
    assert _causal_conv_silu(*inputs).dtype == torch.float32


@pytest.mark.parametrize("host,user,want", [
    ("+sse2,+avx2,+avx512f,+fma", None, "+sse2,+avx2,+avx512f,+fma,-prefer-256-bit"),
    ("+sse2,+avx2,-avx512f,+fma", None, None),
    ("+sse2,+avx2,+avx512f,+fma", "+sse2", None),
])
def test_wide_vectors_only_on_avx512_and_never_over_the_users_choice(monkeypatch, host, user, want):
    llvm = pytest.importorskip("llvmlite.binding")
    monkeypatch.setattr(llvm, "get_host_cpu_features", lambda: type("F", (), {"flatten": lambda self: host})())
    monkeypatch.delenv("NUMBA_CPU_NAME", raising=False)
    if user is None:
        monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    else:
        monkeypatch.setenv("NUMBA_CPU_FEATURES", user)
    assert scan._wide_vector_features() == want
