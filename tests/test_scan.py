"""The chunked selective scan against the sequential reference: outputs, last state and every gradient."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raycad.model import scan
from raycad.model.scan import selective_scan, selective_scan_chunked, selective_scan_reference

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
    assert scan.scan_path(torch.device("cpu")) == "chunked"
    x = {k: v.detach() for k, v in make_inputs(l=6).items()}
    with caplog.at_level(logging.INFO, logger="raycad"):
        first = selective_scan(**x, delta_softplus=True)
        selective_scan(**x, delta_softplus=True)
    messages = [r.getMessage() for r in caplog.records if "selective scan" in r.getMessage()]
    assert messages == ["selective scan: using the chunked path (cpu tensors)"]
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "reference")
    torch.testing.assert_close(selective_scan(**x, delta_softplus=True), first, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "mamba_ssm")
    with pytest.raises(RuntimeError, match="CUDA"):
        selective_scan(**x)
    monkeypatch.setenv("RAYCAD_SELECTIVE_SCAN", "fastest")
    with pytest.raises(ValueError, match="RAYCAD_SELECTIVE_SCAN"):
        selective_scan(**x)
