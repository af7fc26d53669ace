"""The fused-kernel (CUDA) branch of raycad.model, run on CPU through test doubles of the kernels.

`cuda_doubles` provides mamba_ssm's ``selective_scan_fn`` and causal_conv1d's ``causal_conv1d_fn`` with their
real signatures and the checks of their C++ entry points; the `fused` fixture installs them and routes CPU
tensors through them (`raycad.model.kernels.fused_kernels` is the one decision), with and without the conv
kernel. The model then runs forward and backward through every line of its CUDA branch, in float32 and under
bf16 autocast.
"""

from __future__ import annotations

import cuda_doubles
import pytest
import torch
from safetensors.torch import load_file

from raycad.model import CaduceusConfig, CaduceusForSequenceClassification, kernels
from raycad.model.scan import scan_path, selective_scan_reference


@pytest.fixture(params=[True, False], ids=["with-conv-kernel", "scan-kernel-only"])
def fused(request, monkeypatch):
    """The doubles installed (``request.param``: causal_conv1d too); yields whether the conv kernel is there."""
    cuda_doubles.install(monkeypatch, conv=request.param)
    assert scan_path(torch.device("cpu")) == "mamba_ssm"
    yield request.param
    monkeypatch.undo()
    kernels.installed_kernels.cache_clear()


def tiny_model(rcps: bool, seed: int = 0, **overrides) -> CaduceusForSequenceClassification:
    torch.manual_seed(seed)
    config = CaduceusConfig.from_preset("caduceus-ps-1k-d118-l4" if rcps else "caduceus-ph-1k-d118-l4",
                                        **({"d_model": 16, "n_layer": 2, "num_labels": 3} | overrides))
    return CaduceusForSequenceClassification(config)


def ids_batch(batch: int = 3, length: int = 24) -> torch.Tensor:
    ids = torch.randint(7, 12, (batch, length), generator=torch.Generator().manual_seed(1))
    ids[0, :5] = 4  # some left padding
    return ids


def forward_backward(model, ids, autocast: bool = False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    return out.logits.detach().float(), {n: p.grad.float().clone() for n, p in model.named_parameters()}


def use_fused_on_cpu(monkeypatch, on: bool) -> None:
    monkeypatch.setattr(kernels, "FUSED_DEVICE_TYPES", ("cuda", "cpu") if on else ("cuda",))


# ---- the doubles themselves --------------------------------------------------------------------------------------


def scan_inputs(dtype=torch.float32, groups: int = 2):
    gen = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 8, 4, 7
    return {"u": torch.randn(b, d, length, generator=gen).to(dtype),
            "delta": torch.randn(b, d, length, generator=gen).to(dtype),
            "A": -torch.rand(d, n, generator=gen) - 0.1,
            "B": torch.randn(b, groups, n, length, generator=gen).to(dtype),
            "C": torch.randn(b, groups, n, length, generator=gen).to(dtype),
            "D": torch.randn(d, generator=gen),
            "z": torch.randn(b, d, length, generator=gen).to(dtype),
            "delta_bias": torch.randn(d, generator=gen)}


@pytest.mark.parametrize("change,message", [
    ({"u": torch.float32}, "delta dtype"),            # u fp32 with bf16 delta/B/C/z: what main's conv produced
    ({"delta": torch.float32}, "delta dtype"),
    ({"B": torch.float32}, "B dtype"),
    ({"z": torch.float32}, "z dtype"),
    ({"A": torch.bfloat16}, "A dtype"),
    ({"D": torch.bfloat16}, "D dtype"),
    ({"delta_bias": torch.bfloat16}, "delta_bias dtype"),
])
def test_scan_double_enforces_the_kernel_dtypes(change, message):
    x = scan_inputs(torch.bfloat16)
    for name, dtype in change.items():
        x[name] = x[name].to(dtype)
    with pytest.raises(RuntimeError, match=message):
        cuda_doubles.selective_scan_fn(**x, delta_softplus=True)


def test_doubles_enforce_shapes_and_compute_the_reference():
    x = scan_inputs()
    with pytest.raises(RuntimeError, match="not divisible by 3 groups"):
        cuda_doubles.selective_scan_fn(**(x | {"B": x["B"][:, :1].expand(-1, 3, -1, -1)}))
    with pytest.raises(RuntimeError, match="C shape"):
        cuda_doubles.selective_scan_fn(**(x | {"C": x["C"][:, :1]}))
    # a strided last dim is made contiguous by the wrapper, as mamba_ssm's does
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    u_strided = leaves["u"].transpose(1, 2).contiguous().transpose(1, 2)
    out = cuda_doubles.selective_scan_fn(**(leaves | {"u": u_strided}), delta_softplus=True)
    ref_leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref = selective_scan_reference(**ref_leaves, delta_softplus=True)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for name in x:
        torch.testing.assert_close(leaves[name].grad, ref_leaves[name].grad, rtol=1e-5, atol=1e-5)

    conv_x, weight = torch.randn(2, 12, 9), torch.randn(12, 4)
    with pytest.raises(RuntimeError, match="bias dtype"):
        cuda_doubles.causal_conv1d_fn(conv_x, weight, torch.zeros(12, dtype=torch.bfloat16), activation="silu")
    with pytest.raises(RuntimeError, match="width between 2 and 4"):
        cuda_doubles.causal_conv1d_fn(conv_x, torch.randn(12, 5), activation="silu")
    channel_last = torch.randn(2, 9, 12).transpose(1, 2)  # dim 12 is not a multiple of 8
    with pytest.raises(RuntimeError, match="divisible by 8"):
        cuda_doubles.causal_conv1d_fn(channel_last, weight, activation="silu")
    expected = torch.nn.functional.silu(torch.nn.functional.conv1d(conv_x, weight[:, None], padding=3,
                                                                   groups=12)[..., :9])
    torch.testing.assert_close(cuda_doubles.causal_conv1d_fn(conv_x, weight, activation="silu"), expected)


# ---- the model through the fused branch ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["caduceus_ps_tiny", "caduceus_ph_tiny"])
def test_golden_logits_through_the_fused_branch(fused, shared_dir, case):
    reference = shared_dir / "reference" / case
    golden = load_file(str(reference / "golden.safetensors"))
    model = CaduceusForSequenceClassification.from_pretrained(reference).eval()
    with torch.no_grad():
        logits = model(golden["input_ids"]).logits
    assert (logits - golden["logits"]).abs().max() < 1e-4
    n_scans = model.config.n_layer
    assert cuda_doubles.CALLS["scan_fwd"] == n_scans
    assert cuda_doubles.CALLS["conv_fwd"] == (n_scans if fused else 0)


@pytest.mark.parametrize("rcps", [False, True], ids=["ph", "ps"])
def test_fp32_forward_backward_equal_the_cpu_path(fused, monkeypatch, rcps):
    model, ids = tiny_model(rcps), ids_batch()
    use_fused_on_cpu(monkeypatch, False)
    logits_cpu, grads_cpu = forward_backward(model, ids)
    assert cuda_doubles.CALLS["scan_fwd"] == 0
    use_fused_on_cpu(monkeypatch, True)
    logits, grads = forward_backward(model, ids)
    layers = model.config.n_layer
    assert cuda_doubles.CALLS["scan_fwd"] == cuda_doubles.CALLS["scan_bwd"] == layers
    assert cuda_doubles.CALLS["conv_fwd"] == cuda_doubles.CALLS["conv_bwd"] == (layers if fused else 0)
    torch.testing.assert_close(logits, logits_cpu, rtol=1e-5, atol=1e-5)
    for name, grad in grads_cpu.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("rcps", [False, True], ids=["ph", "ps"])
def test_bf16_autocast_forward_backward(fused, rcps):
    """Under bf16 autocast the scan gets u, delta, B, C, z in bf16 and the dt bias as float32 delta_bias."""
    model, ids = tiny_model(rcps), ids_batch()
    logits, grads = forward_backward(model, ids, autocast=True)
    assert cuda_doubles.CALLS["scan_bwd"] == model.config.n_layer
    call = cuda_doubles.SCAN_ARGS[-1]
    assert {call[k] for k in ("u", "delta", "B", "C", "z")} == {torch.bfloat16}
    assert call["delta_bias"] is not None and call["delta_bias"].dtype == torch.float32
    first = model.caduceus.backbone.layers[-1].mixer
    mixer = first.submodule if rcps else first
    torch.testing.assert_close(call["delta_bias"], torch.cat([mixer.mamba_fwd.dt_proj.bias,
                                                              mixer.mamba_rev.dt_proj.bias]).detach())
    logits32, grads32 = forward_backward(model, ids)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert (logits - logits32).abs().max() < 0.05 * logits32.abs().max() + 1e-3
    # bf16 gradients point the same way as float32 ones
    flat, flat32 = torch.cat([g.flatten() for g in grads.values()]), torch.cat([g.flatten() for g in grads32.values()])
    assert torch.nn.functional.cosine_similarity(flat, flat32, dim=0) > 0.98


def test_lora_on_dt_proj_through_the_fused_branch(monkeypatch):
    from raycad.config import FinetuneConfig
    from raycad.train.build import build_model
    from raycad.train.lora import merge_lora

    cuda_doubles.install(monkeypatch, conv=False)
    try:
        cfg = FinetuneConfig().with_overrides({
            "model.preset": "caduceus-ph-1k-d128-l4", "model.overrides": {"d_model": 16, "n_layer": 1},
            "peft.method": "lora", "peft.target_modules": ["dt_proj", "in_proj"]})
        model = build_model(cfg, 2)
        adapters = {n: p for n, p in model.named_parameters() if "lora_" in n}
        assert any("dt_proj" in n for n in adapters)
        for p in adapters.values():
            p.data.normal_(std=0.05)
        ids = ids_batch(2, 20)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=torch.tensor([0, 1]))
        out.loss.backward()
        assert cuda_doubles.CALLS["scan_bwd"] == 1
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.values())
        with torch.no_grad():
            before = model(input_ids=ids).logits
            merged = merge_lora(model)
            torch.testing.assert_close(merged(input_ids=ids).logits, before, rtol=1e-4, atol=1e-5)
    finally:
        monkeypatch.undo()
        kernels.installed_kernels.cache_clear()


def test_gpu_check_script_runs_on_cpu(monkeypatch, capsys):
    """bench/gpu_check.py (run by bench/gpu_check.sh on the first GPU machine) stays runnable: a CPU smoke run
    through the kernel doubles, every step but the finetune, nothing written."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    cuda_doubles.install(monkeypatch, conv=True)
    try:
        assert gpu_check.main(["--device", "cpu", "--skip-finetune", "--presets", "caduceus-ph-1k-d64-l2",
                               "--lengths", "16", "--batch", "2", "--repeats", "1"]) == 0
    finally:
        monkeypatch.undo()
        kernels.installed_kernels.cache_clear()
    out = capsys.readouterr().out
    assert '"scan_path": "mamba_ssm"' in out and '"path": "fused kernels"' in out
    assert all(f"[gpu_check] {step}" in out for step in ("environment", "golden", "bf16", "throughput"))
