"""raycad.model against the authors' Caduceus outputs (../shared/reference) and its own contracts.

Golden cases load with strict `from_pretrained` and must reproduce the reference tensors to 1e-4 (float32).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from raycad.model import (
    PRESETS,
    CaduceusConfig,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusModel,
    CheckpointMismatchError,
)
from raycad.model.modeling import BiMambaWrapper, Mamba
from raycad.model.scan import selective_scan_reference

TOL = 1e-4
GOLDEN_CASES = ["caduceus_ps_tiny", "caduceus_ph_tiny"]
ALL_CASES = GOLDEN_CASES + ["caduceus_ps_d256_l4_shapes"]


@pytest.fixture(scope="module")
def reference(shared_dir):
    return shared_dir / "reference"


def tiny_config(rcps: bool = True, **overrides) -> CaduceusConfig:
    return CaduceusConfig.from_preset("caduceus-ps-1k-d118-l4" if rcps else "caduceus-ph-1k-d118-l4",
                                      **({"d_model": 16, "n_layer": 2} | overrides))


def random_ids(batch: int = 3, length: int = 40, pad_rows: int = 1, seed: int = 0) -> torch.Tensor:
    """A/C/G/T/N ids; the first ``pad_rows`` rows are left-padded with [PAD]=4."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, 12, (batch, length), generator=gen)
    for row in range(pad_rows):
        ids[row, : length // 3 + row] = 4
    return ids


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ---- the authors' outputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_reference(reference, case):
    golden = load_file(str(reference / case / "golden.safetensors"))
    model = CaduceusForSequenceClassification.from_pretrained(reference / case, pool_ignore_padding=False).eval()
    errors = {}
    with torch.no_grad():
        ids = golden["input_ids"]
        errors["hidden_states"] = max_err(model.caduceus(ids).last_hidden_state, golden["hidden_states"])
        errors["logits"] = max_err(model(ids).logits, golden["logits"])
        if case.startswith("caduceus_ps"):
            rc = golden["input_ids_rc"]
            errors["hidden_states_rc"] = max_err(model.caduceus(rc).last_hidden_state, golden["hidden_states_rc"])
            errors["logits_rc"] = max_err(model(rc).logits, golden["logits_rc"])
            mlm = CaduceusForMaskedLM.from_pretrained(reference / case).eval()  # backbone + tied LM head
            errors["mlm_logits"] = max_err(mlm(ids).logits, golden["mlm_logits"])
            errors["mlm_logits_rc"] = max_err(mlm(rc).logits, golden["mlm_logits_rc"])
        else:
            conjoined = CaduceusForSequenceClassification.from_pretrained(
                reference / case, pool_ignore_padding=False, conjoin_eval=True).eval()
            errors["logits_conjoined"] = max_err(conjoined(golden["input_ids_conjoined"]).logits,
                                                 golden["logits_conjoined"])
            # a [B, L] input is reverse-complemented on the fly: same numbers
            errors["logits_conjoined_2d"] = max_err(conjoined(ids).logits, golden["logits_conjoined"])
    print(case, {k: f"{v:.2e}" for k, v in errors.items()})
    assert all(v <= TOL for v in errors.values()), errors


@pytest.mark.parametrize("case", ALL_CASES)
@pytest.mark.parametrize("cls,listing", [(CaduceusForSequenceClassification, "keys.json"),
                                         (CaduceusForMaskedLM, "keys_mlm.json")])
def test_state_dict_layout(reference, case, cls, listing):
    model = cls(CaduceusConfig.from_pretrained(reference / case))
    ours = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in model.state_dict().items()]
    expected = [{k: entry[k] for k in ("name", "shape", "dtype")}
                for entry in json.loads((reference / case / listing).read_text())]
    assert ours == expected
    params = dict(model.named_parameters(remove_duplicate=False))
    for entry in json.loads((reference / case / listing).read_text()):
        if "tied_to" in entry:
            assert params[entry["name"]] is params[entry["tied_to"]]


def test_released_shape_parameter_count(reference):
    backbone = CaduceusModel(CaduceusConfig.from_pretrained(reference / "caduceus_ps_d256_l4_shapes"))
    assert backbone.num_parameters() == 1_934_592  # tied tensors counted once
    preset = CaduceusModel(CaduceusConfig.from_preset("caduceus-ps-1k-d256-l4"))
    assert preset.num_parameters() == 1_934_592


def test_presets_build_expected_shapes():
    for name in PRESETS:
        config = CaduceusConfig.from_preset(name)
        assert config.rcps == (name.split("-")[1] == "ps")
        assert f"-d{config.d_model}-l{config.n_layer}" in name
    model = CaduceusModel(CaduceusConfig.from_preset("caduceus-ph-131k-d256-l16"))
    assert len(model.backbone.layers) == 16 and model.config.vocab_size == 16
    assert model.config.complement_map[12] == 12  # extended to the padded vocabulary
    with pytest.raises(KeyError, match="known presets"):
        CaduceusConfig.from_preset("caduceus-xl")


# ---- properties ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "max", "first", "last"])
def test_ps_logits_invariant_to_reverse_complement(pooling):
    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(tiny_config(rcps=True, pooling=pooling, num_labels=3)).eval()
    ids = random_ids()
    with torch.no_grad():
        assert max_err(model(ids).logits, model(model.caduceus.reverse_complement(ids)).logits) < 1e-5


def test_ph_conjoined_logits_symmetric():
    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(tiny_config(rcps=False, conjoin_eval=True)).eval()
    ids = random_ids()
    rc = model.caduceus.reverse_complement(ids)
    with torch.no_grad():
        conj = model(torch.stack([ids, rc], dim=-1)).logits
        assert max_err(conj, model(torch.stack([rc, ids], dim=-1)).logits) < 1e-5
        assert max_err(conj, model(ids).logits) < 1e-6
        plain = CaduceusForSequenceClassification(model.config).eval()
        plain.load_state_dict(model.state_dict())
        plain.config.conjoin_eval = False
        assert max_err(plain(ids).logits, plain(rc).logits) > 1e-4  # not invariant without conjoining


def test_mamba_init_and_tying():
    config = tiny_config(rcps=True)
    model = CaduceusForMaskedLM(config)
    mixer = model.caduceus.backbone.layers[0].mixer.submodule
    fwd, rev = mixer.mamba_fwd, mixer.mamba_rev
    assert rev.in_proj is fwd.in_proj and rev.out_proj is fwd.out_proj
    assert model.lm_head.lm_head.weight is model.caduceus.backbone.embeddings.word_embeddings.embedding.weight
    n = config.mamba_kwargs["d_state"]
    assert torch.equal(fwd.A_log, torch.log(torch.arange(1, n + 1.0)).repeat(fwd.d_inner, 1))
    assert torch.equal(fwd.D, torch.ones(fwd.d_inner))
    dt = torch.nn.functional.softplus(fwd.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert fwd.dt_rank == math.ceil(config.d_model / 16)
    bound = fwd.dt_rank ** -0.5
    assert fwd.dt_proj.weight.abs().max() <= bound


def mamba_slow(m: Mamba, h: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's non-fused forward, literally: nn.Conv1d + the sequential reference scan."""
    length = h.shape[1]
    x, z = m.in_proj(h).transpose(1, 2).chunk(2, dim=1)
    x = torch.nn.functional.silu(m.conv1d(x)[..., :length])
    dt, B, C = m.x_proj(x.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = (dt @ m.dt_proj.weight.t()).transpose(1, 2)
    y = selective_scan_reference(x, dt, -torch.exp(m.A_log), B.transpose(1, 2), C.transpose(1, 2), m.D, z=z,
                                 delta_bias=m.dt_proj.bias, delta_softplus=True)
    return m.out_proj(y.transpose(1, 2))


@pytest.mark.parametrize("tie,strategy,bias", [(True, "add", False), (True, "add", True),
                                               (False, "add", False), (True, "ew_multiply", True)])
def test_bimamba_matches_two_slow_mambas(tie, strategy, bias):
    torch.manual_seed(0)
    mixer = BiMambaWrapper(16, bidirectional_strategy=strategy, bidirectional_weight_tie=tie, bias=bias)
    h = torch.randn(2, 23, 16)
    fwd = mamba_slow(mixer.mamba_fwd, h)
    rev = mamba_slow(mixer.mamba_rev, h.flip(1)).flip(1)
    expected = fwd + rev if strategy == "add" else fwd * rev
    assert max_err(mixer(h), expected) < 1e-5
    assert max_err(mixer.mamba_fwd(h), fwd) < 1e-5


@pytest.mark.parametrize("overrides", [{"rms_norm": False}, {"residual_in_fp32": True},
                                       {"bidirectional_strategy": "ew_multiply", "bidirectional_weight_tie": False},
                                       {"bidirectional": False}])
def test_ps_backbone_rc_equivariant_variants(overrides):
    torch.manual_seed(0)
    model = CaduceusModel(tiny_config(rcps=True, **overrides)).eval()
    ids = random_ids()
    with torch.no_grad():
        h, h_rc = model(ids).last_hidden_state, model(model.reverse_complement(ids)).last_hidden_state
    assert max_err(h_rc, h.flip(1, 2)) < 1e-5


# ---- save / load ----------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(rcps=True, num_labels=3, pooling="max", head_hidden_sizes=[8], head_dropout=0.1,
                         head_activation="silu")
    model = CaduceusForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert set(stored) == set(model.state_dict())  # tied tensors stored as separate copies
    loaded = CaduceusForSequenceClassification.from_pretrained(tmp_path).eval()
    assert (loaded.config.num_labels, loaded.config.pooling, loaded.config.head_hidden_sizes) == (3, "max", [8])
    assert loaded.caduceus.backbone.layers[0].mixer.submodule.mamba_rev.in_proj is \
        loaded.caduceus.backbone.layers[0].mixer.submodule.mamba_fwd.in_proj
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    # pytorch_model.bin (read with weights_only=True) loads the same
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with torch.no_grad():
        assert torch.equal(CaduceusForSequenceClassification.from_pretrained(tmp_path).eval()(ids).logits,
                           model(ids).logits)


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_released_config_pools_like_the_reference_by_default(reference, case, tmp_path):
    """A config.json without raycad's head keys is a released one: every position pooled, padding included."""
    golden = load_file(str(reference / case / "golden.safetensors"))
    assert (golden["input_ids"] == 4).any()  # the golden batch has padding, so the pooling rule matters
    assert "pool_ignore_padding" not in json.loads((reference / case / "config.json").read_text())
    model = CaduceusForSequenceClassification.from_pretrained(reference / case).eval()
    assert model.config.pool_ignore_padding is False
    with torch.no_grad():
        assert max_err(model(golden["input_ids"]).logits, golden["logits"]) < TOL
    # raycad's own exports record their pooling, and it survives the round trip either way
    for ignore in (True, False):
        model.config.pool_ignore_padding = ignore
        model.save_pretrained(tmp_path / str(ignore))
        assert json.loads((tmp_path / str(ignore) / "config.json").read_text())["pool_ignore_padding"] is ignore
        loaded = CaduceusForSequenceClassification.from_pretrained(tmp_path / str(ignore))
        assert loaded.config.pool_ignore_padding is ignore
    assert CaduceusConfig.from_preset("caduceus-ph-1k-d64-l2").pool_ignore_padding is True  # raycad's default


def test_tied_copies_may_be_missing_but_not_differ(reference, tmp_path):
    case = reference / "caduceus_ps_tiny"
    state = load_file(str(case / "model.safetensors"))
    config = CaduceusConfig.from_pretrained(case)
    model = CaduceusForSequenceClassification(config)
    dedup = {k: v for k, v in state.items() if ".mamba_rev.in_proj." not in k}  # as HF's dedup would store it
    model.load_checkpoint(dedup)
    key = "caduceus.backbone.layers.0.mixer.submodule.mamba_rev.in_proj.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    state[key] = state[key] + 1.0
    with pytest.raises(CheckpointMismatchError, match="tied copies differ"):
        model.load_checkpoint(state)


def test_mismatch_raises_one_clear_error(reference):
    case = reference / "caduceus_ps_tiny"
    state = load_file(str(case / "model.safetensors"))
    del state["caduceus.backbone.norm_f.weight"]
    state["caduceus.backbone.layers.0.extra.weight"] = torch.zeros(3)
    state["caduceus.backbone.layers.1.norm.weight"] = torch.zeros(5)
    model = CaduceusForSequenceClassification(CaduceusConfig.from_pretrained(case))
    with pytest.raises(CheckpointMismatchError) as err:
        model.load_checkpoint(state, source="ckpt.safetensors")
    message = str(err.value)
    for part in ["ckpt.safetensors", "missing (1): caduceus.backbone.norm_f.weight",
                 "unexpected (1): caduceus.backbone.layers.0.extra.weight",
                 "mis-shaped (1): caduceus.backbone.layers.1.norm.weight: checkpoint [5] vs model [32]"]:
        assert part in message
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):  # another shape entirely
        CaduceusForSequenceClassification.from_pretrained(case, d_model=48)
    with pytest.raises(CheckpointMismatchError, match="reinit_head=True"):
        CaduceusForSequenceClassification.from_pretrained(case, num_labels=3)
    model = CaduceusForSequenceClassification.from_pretrained(case, num_labels=3, reinit_head=True)
    assert model.score.weight.shape == (3, 32)


def test_backbone_only_checkpoint_into_classifier(tmp_path):
    torch.manual_seed(0)
    backbone = CaduceusModel(tiny_config(rcps=True))
    backbone.save_pretrained(tmp_path)
    assert all(k.startswith("backbone.") for k in load_file(str(tmp_path / "model.safetensors")))
    model = CaduceusForSequenceClassification.from_pretrained(tmp_path, num_labels=4, pooling="mean").eval()
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(model.caduceus.state_dict()[name], tensor)
    assert model.score.weight.shape == (4, 16)
    with torch.no_grad():
        assert model(random_ids()).logits.shape == (3, 4)
    mlm = CaduceusForMaskedLM.from_pretrained(tmp_path)  # the LM head is tied: nothing is missing
    assert mlm(random_ids()).logits.shape == (3, 40, 16)
    model.save_pretrained(tmp_path / "clf")  # and the backbone back out of a classifier checkpoint
    back = CaduceusModel.from_pretrained(tmp_path / "clf")
    assert torch.equal(back.state_dict()["backbone.norm_f.weight"], backbone.state_dict()["backbone.norm_f.weight"])


def test_unreachable_hub_repo_gives_clear_error(tmp_path):
    with pytest.raises(OSError, match="not a local directory"):
        CaduceusForSequenceClassification.from_pretrained("no-such-owner/no-such-model", local_files_only=True,
                                                          cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        CaduceusForSequenceClassification.from_pretrained(str(tmp_path / "missing" / "dir"))


# ---- heads, training ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rcps", [True, False])
@pytest.mark.parametrize("pooling,ignore_padding", [("mean", True), ("mean", False), ("max", True),
                                                     ("first", True), ("last", False)])
def test_heads_forward_backward(rcps, pooling, ignore_padding):
    torch.manual_seed(0)
    config = tiny_config(rcps=rcps, pooling=pooling, pool_ignore_padding=ignore_padding, num_labels=3,
                         head_hidden_sizes=[12, 6], head_dropout=0.1, head_activation="relu", conjoin_train=not rcps)
    model = CaduceusForSequenceClassification(config).train()
    out = model(random_ids(), labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3) and out.loss.ndim == 0
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_mean_pooling_ignores_padding():
    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(tiny_config(rcps=False)).eval()
    ids = random_ids(batch=2, pad_rows=0)
    padded = torch.cat([torch.full((2, 10), 4), ids], dim=1)
    hidden = model.caduceus(padded).last_hidden_state
    with torch.no_grad():
        expected = model.score(hidden[:, 10:].mean(1))
        assert max_err(model(padded).logits, expected) < 1e-6


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(tiny_config(rcps=True)).train()
    ids, labels = random_ids(), torch.tensor([0, 1, 1])
    model(ids, labels=labels).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(ids, labels=labels).loss.backward()
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, grads[name], atol=1e-6), name


@pytest.mark.parametrize("rcps,overrides", [(True, {}), (False, {}),
                                             (False, {"bidirectional_strategy": "ew_multiply",
                                                      "bidirectional_weight_tie": False})])
def test_fused_batch_major_mixer_matches_chunked(rcps, overrides, monkeypatch):
    """With the fused scan the mixer runs batch-major (numba conv and scan on [B, L, *] storage, the reverse
    direction walking time backwards instead of flipped copies); its logits and every parameter gradient equal
    the time-major chunked path's (which flips), and so do the fused path's with flipped copies (the benchmarks'
    ``REVERSE_IN_KERNELS = False``)."""
    pytest.importorskip("numba")
    from raycad.model import modeling, scan

    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(tiny_config(rcps=rcps, **overrides)).train()
    ids, labels = random_ids(), torch.tensor([0, 1, 1])
    results = {}
    for impl, in_kernels in (("chunked", True), ("fused", True), ("fused", False)):
        monkeypatch.setattr(scan, "_configured", impl)
        monkeypatch.setattr(modeling, "REVERSE_IN_KERNELS", in_kernels)
        model.zero_grad()
        out = model(ids, labels=labels)
        out.loss.backward()
        results[impl, in_kernels] = {"logits": out.logits.detach(),
                                     **{n: p.grad.clone() for n, p in model.named_parameters()}}
    assert scan.scan_path() == "fused"
    for got in (results["fused", True], results["fused", False]):
        for name, want in results["chunked", True].items():
            assert max_err(got[name], want) <= 1e-5 * (want.abs().max().item() + 1e-12), name


def test_unfused_rcps_layout_loads_and_differs(reference, tmp_path):
    """The unfused RCPS checkpoints name norms ``norm.submodule.weight``; their math has no half-swap."""
    case = reference / "caduceus_ps_tiny"
    state = {k.replace(".norm.weight", ".norm.submodule.weight").replace("norm_f.weight", "norm_f.submodule.weight"): v
             for k, v in load_file(str(case / "model.safetensors")).items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    config = json.loads((case / "config.json").read_text()) | {"fused_add_norm": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    unfused = CaduceusModel.from_pretrained(tmp_path).eval()
    fused = CaduceusModel.from_pretrained(case).eval()
    ids = random_ids()
    with torch.no_grad():
        assert max_err(unfused(ids).last_hidden_state, fused(ids).last_hidden_state) > 1e-3
        # and it is still RC-equivariant: h(rc(x)) = flip_{L,C}(h(x))
        h, h_rc = unfused(ids).last_hidden_state, unfused(unfused.reverse_complement(ids)).last_hidden_state
        assert max_err(h_rc, h.flip(1, 2)) < 1e-5
