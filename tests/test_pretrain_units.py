"""Pre-training components without Ray: masking statistics, windowing, the MLM loss against a hand
computation, the step plan, and the export -> fine-tuning round trip in the released key layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from raycad.config import ConfigError, FinetuneConfig, PretrainConfig
from raycad.model.tokenizer import A_ID, MASK_ID, N_ID, PAD_ID, SEP_ID, T_ID
from raycad.pretrain.loss import MLMMetrics, masked_lm_loss
from raycad.pretrain.masking import IGNORE_INDEX, MLMCollator, mask_tokens
from raycad.pretrain.windows import count_windows, window_batch, window_spans

OPTIONS = {"max_length": 10, "stride": 10, "max_n_fraction": 0.5, "invalid_chars": "unk", "holdout": (),
           "val_fraction": 0.0, "seed": 0}


# ---- masking -----------------------------------------------------------------------------------------------------


def test_masking_statistics_and_never_specials_or_padding() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(A_ID, N_ID + 1, size=(400, 500))
    ids[:, :50] = PAD_ID          # left padding
    ids[:, 60] = SEP_ID           # a special token inside the window
    keys = rng.integers(0, 2**63, size=400).astype(np.uint64)
    inputs, labels = mask_tokens(ids, keys, 7, 1)

    special = (ids == PAD_ID) | (ids == SEP_ID)
    assert (labels[special] == IGNORE_INDEX).all() and (inputs[special] == ids[special]).all()
    chosen = labels != IGNORE_INDEX
    assert (labels[chosen] == ids[chosen]).all() and (inputs[~chosen] == ids[~chosen]).all()
    n = int(chosen.sum())  # ~27,000 targets among 179,600 base positions
    assert abs(n / (~special).sum() - 0.15) < 0.005
    as_mask = (inputs[chosen] == MASK_ID).mean()
    changed = ((inputs[chosen] != MASK_ID) & (inputs[chosen] != ids[chosen])).mean()
    same = (inputs[chosen] == ids[chosen]).mean()
    # 80% [MASK]; 10% a random base of A/C/G/T (a quarter of those draw the original base, N never does);
    # 10% unchanged.
    p_n = (ids[chosen] == N_ID).mean()
    random_differs = 0.1 * ((1 - p_n) * 0.75 + p_n)
    assert abs(as_mask - 0.8) < 0.01
    assert abs(changed - random_differs) < 0.006
    assert abs(same - (0.1 + 0.1 - random_differs)) < 0.006
    replaced = inputs[chosen & (inputs != MASK_ID) & (inputs != ids)]
    assert replaced.min() >= A_ID and replaced.max() <= T_ID  # random replacements are bases, never N/specials

    # deterministic in (key, salt): same masks for the same windows in another order; other salt, other masks
    order = rng.permutation(400)
    inputs2, labels2 = mask_tokens(ids[order], keys[order], 7, 1)
    assert (inputs2 == inputs[order]).all() and (labels2 == labels[order]).all()
    assert (mask_tokens(ids, keys, 7, 2)[1] != labels).any()
    # N excluded as a target when asked
    no_n = mask_tokens(ids, keys, 7, 1, mask_n=False)[1]
    assert not (ids[no_n != IGNORE_INDEX] == N_ID).any()


def test_mlm_collator_rc_then_mask() -> None:
    cfg = PretrainConfig()
    ids = np.tile(np.array([PAD_ID, PAD_ID, A_ID, A_ID, A_ID, T_ID + 0, 8, 9], dtype=np.uint8), (64, 1))
    keys = np.arange(64, dtype=np.uint64)
    out = MLMCollator(cfg.mlm, rc_prob=1.0, salt=(0, 0, 0))({"input_ids": ids, "key": keys})
    labels = out["labels"].numpy()
    # every row reverse-complemented (padding stays on the left) before masking: targets are RC bases
    rc = np.array([PAD_ID, PAD_ID, 8, 9, 7, T_ID, T_ID, T_ID])
    chosen = labels != IGNORE_INDEX
    assert (labels[chosen] == np.broadcast_to(rc, labels.shape)[chosen]).all()
    assert not chosen[:, :2].any()
    assert out["input_ids"].dtype == torch.int64 and set(out) == {"input_ids", "labels"}


# ---- windowing -----------------------------------------------------------------------------------------------------


def _batch(records: dict[str, str]) -> pa.Table:
    return pa.table({"id": list(records), "sequence": list(records.values())})


@pytest.mark.parametrize("stride", [10, 4, 3])
def test_windowing_multi_record_fasta_counts_and_exact_coverage(tmp_path, stride) -> None:
    from raycad.data.fastx import read_fastx

    rng = np.random.default_rng(1)
    lengths = {"chr1": 57, "chr2": 10, "read1": 7, "chr3": 11, "empty_gap": 0, "chr4": 23}
    records = {name: "".join(rng.choice(list("ACGT"), n)) for name, n in lengths.items()}
    fasta = tmp_path / "genome.fa"
    fasta.write_text("".join(f">{k}\n" + "\n".join(v[i:i + 8] for i in range(0, len(v), 8)) + "\n"
                             for k, v in records.items()))
    parsed = {r.id: r.sequence for r in read_fastx(str(fasta))}
    assert parsed == records
    options = {**OPTIONS, "stride": stride}
    out = list(window_batch(_batch(parsed), **options))
    windows = np.concatenate([o["input_ids"] for o in out])
    expected = {name: 0 if n == 0 else 1 + math.ceil(max(0, n - 10) / stride) for name, n in lengths.items()}
    assert len(windows) == sum(expected.values())
    counts = count_windows(_batch(parsed), **options)
    assert counts["windows"][0] == len(windows) and counts["records"][0] == 6 and counts["bases"][0] == 108

    record, starts, sizes = window_spans(np.array(list(lengths.values())), 10, stride)
    decode = dict(zip(range(7, 12), "ACGTN"))
    for row, (r, s, size) in enumerate(zip(record, starts, sizes)):
        name = list(lengths)[r]
        text = "".join(decode[int(t)] for t in windows[row] if t != PAD_ID)
        assert text == records[name][s:s + size]  # each window is exactly its slice of the record
        assert (windows[row, :10 - size] == PAD_ID).all()  # short records are left-padded, kept whole
    for r, (name, n) in enumerate(lengths.items()):  # coverage: every base of every record, nothing beyond
        covered = np.zeros(n, dtype=int)
        for s, size in zip(starts[record == r], sizes[record == r]):
            covered[s:s + size] += 1
            assert s + size <= n
        assert (covered >= 1).all()
        steps = np.diff(starts[record == r])
        assert (steps[:-1] == stride).all() and (len(steps) == 0 or 0 < steps[-1] <= stride)
        if stride == 10:  # adjacent windows: each base exactly once
            assert (covered == 1).all() if n % 10 == 0 or n < 10 else covered.sum() - n == 10 - n % 10


def test_windowing_drops_and_counts_mostly_n_windows_and_holds_out_records() -> None:
    records = {"a": "ACGTACGTAC" + "NNNNNNNNNN" + "NNNNACGTAC", "b": "NNNNNNACGT", "c": "ACGTANNNNN"}
    out = list(window_batch(_batch(records), **OPTIONS))
    kept = np.concatenate([o["input_ids"] for o in out])
    counts = count_windows(_batch(records), **OPTIONS)
    # a: 3 windows, the all-N one dropped; 4/10 N is kept; b: 6/10 N dropped; c: 5/10 N kept (not "more than")
    assert counts["windows"][0] == 5 and counts["mostly_n"][0] == 2 and len(kept) == 3 == counts["train"][0]
    assert ((kept == N_ID).mean(axis=1) <= 0.5).all()
    held = next(window_batch(_batch(records), **{**OPTIONS, "holdout": ("c",)}))["heldout"]
    assert held.tolist() == [False, False, True]
    fraction = count_windows(_batch({f"r{i}": "ACGTACGTAC" for i in range(2000)}),
                             **{**OPTIONS, "val_fraction": 0.1})
    assert 150 < fraction["heldout"][0] < 250 and fraction["heldout"][0] + fraction["train"][0] == 2000


# ---- loss ------------------------------------------------------------------------------------------------------------


def test_masked_lm_loss_equals_hand_computation_on_a_tiny_model() -> None:
    from raycad.model import CaduceusConfig, CaduceusForMaskedLM

    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.from_preset("caduceus-ps-1k-d128-l4", d_model=16, n_layer=1)).eval()
    ids = torch.randint(A_ID, T_ID + 1, (3, 12))
    ids[2, :4] = PAD_ID
    inputs, labels = mask_tokens(ids.numpy(), np.arange(3, dtype=np.uint64), 5, probability=0.3)
    inputs, labels = torch.from_numpy(inputs), torch.from_numpy(labels)
    assert 0 < (labels != IGNORE_INDEX).sum() < labels.numel()
    with torch.no_grad():
        out = model(input_ids=inputs, labels=labels)
    # by hand: -log softmax(logits)[true token], averaged over the masked positions only
    terms = []
    for b in range(3):
        for t in range(12):
            if labels[b, t] != IGNORE_INDEX:
                row = out.logits[b, t].double()
                terms.append(-(row[labels[b, t]] - torch.log(torch.exp(row).sum())))
    hand = torch.stack(terms).mean()
    assert masked_lm_loss(out.logits, labels).double().item() == pytest.approx(hand.item(), rel=1e-5)
    assert out.loss.double().item() == pytest.approx(hand.item(), rel=1e-5)  # the model's own loss agrees
    metrics = MLMMetrics()
    metrics.update(out.logits[:2], labels[:2])
    metrics.update(out.logits[2:], labels[2:])
    result = metrics.compute("val_")
    assert result["val_loss"] == pytest.approx(hand.item(), rel=1e-5)
    assert result["val_perplexity"] == pytest.approx(math.exp(hand.item()), rel=1e-5)
    correct = (out.logits.argmax(-1) == labels)[labels != IGNORE_INDEX].float().mean().item()
    assert result["val_accuracy"] == pytest.approx(correct) and result["val_masked_tokens"] == len(terms)
    no_targets = torch.full_like(labels, IGNORE_INDEX)
    assert masked_lm_loss(out.logits, no_targets).item() == 0.0


def test_loop_steps_without_ray_train_one_band_and_its_row() -> None:
    """The loop's steps run alone: `mlm_forward_backward` trains on a masked batch (its band holds the batch's
    masked-token loss and counts, read back only when reported) and `band_row` turns the band into a row."""
    from raycad.model.scan import set_scan_impl
    from raycad.pretrain.loop import build_mlm_model

    cfg = PretrainConfig.load(overrides=["model.preset=caduceus-ps-1k-d128-l4", "model.overrides={d_model: 16}",
                                         "data.max_length=12", "train.max_steps=2",
                                         "model.scan_impl=chunked"])  # no JIT compile in a unit test
    try:
        _one_band(cfg, build_mlm_model(cfg))
    finally:
        set_scan_impl("auto")  # build_mlm_model set it for this process


def _one_band(cfg: PretrainConfig, model: torch.nn.Module) -> None:
    from raycad.pretrain.loop import Band, MLMWorker, band_row, mlm_forward_backward
    from raycad.train.loop import build_optimizer, build_scheduler

    optimizer = build_optimizer(model, cfg)
    worker = MLMWorker(cfg, {"total_steps": 2, "batches_per_epoch": 1}, 0, 1, torch.device("cpu"), model,
                       optimizer, build_scheduler(optimizer, cfg, 2), None)
    batch = MLMCollator(cfg.mlm, salt=(1,))({"input_ids": np.random.default_rng(0).integers(A_ID, T_ID + 1, (4, 12)),
                                            "key": np.arange(4, dtype=np.uint64)})
    band = Band(start=0.0)
    mlm_forward_backward(worker, batch, band, sync=True)
    assert all(p.grad is not None for p in worker.trainable)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
    targets = int((batch["labels"] != IGNORE_INDEX).sum())
    assert band.metrics.targets == targets > 0 and band.windows == 4
    assert band.metrics.loss_sum == pytest.approx(float(masked_lm_loss(logits, batch["labels"], "sum")), rel=1e-5)
    worker.state.update(step=1, windows=4)
    row = band_row(worker, "band", band, windows=4, elapsed=2.0)
    assert row["tokens_per_s"] == 4 * 12 / 2.0 and row["train_masked_tokens"] == targets and row["epoch"] == 1
    assert row["train_loss"] == pytest.approx(band.metrics.loss_sum / targets)


# ---- config and plan -------------------------------------------------------------------------------------------------


def test_step_plan_epochs_steps_and_token_budget() -> None:
    from raycad.pretrain.recipe import step_plan

    cfg = PretrainConfig.load(overrides=["train.batch_size=16", "scaling.num_workers=2", "train.epochs=3",
                                         "data.max_length=100"])
    plan = step_plan(cfg, 101)  # 50 windows per worker, 8 per worker batch -> 7 batches, 7 steps per epoch
    assert plan == {"batches_per_epoch": 7, "steps_per_epoch": 7, "total_steps": 21, "epochs": 3}
    assert step_plan(cfg.with_overrides({"train.max_steps": 30}), 101)["total_steps"] == 30
    assert step_plan(cfg.with_overrides({"train.max_steps": 30}), 101)["epochs"] == 5
    assert step_plan(cfg.with_overrides({"train.max_tokens": 16_001}), 101)["total_steps"] == 11
    assert PretrainConfig.load(overrides=["data.train=genome.fa"]).data.train == ["genome.fa"]
    with pytest.raises(ConfigError, match="stride"):
        PretrainConfig.load(overrides=["data.max_length=10", "data.stride=11"])
    with pytest.raises(ConfigError, match="mask_token"):
        PretrainConfig.load(overrides=["mlm.mask_token=0.95"])


# ---- export -> fine-tuning -------------------------------------------------------------------------------------------


def test_export_matches_released_mlm_keys_and_loads_into_classifier(shared_dir, tmp_path) -> None:
    from safetensors.torch import load_file

    from raycad.model import CaduceusForSequenceClassification
    from raycad.pretrain.loop import build_mlm_model
    from raycad.train.build import build_model
    from raycad.train.checkpoint import export_model

    reference = shared_dir / "reference" / "caduceus_ps_tiny"
    cfg = PretrainConfig.load(overrides=[f"model.pretrained={reference}"])  # continue from the released layout
    mlm = build_mlm_model(cfg)
    with torch.no_grad():
        for p in mlm.parameters():
            p.add_(0.01)  # "trained": differs from the reference weights
    export = export_model(mlm, tmp_path / "model", meta={"objective": "masked-lm"})

    listing = json.loads((reference / "keys_mlm.json").read_text())
    saved = load_file(str(export / "model.safetensors"))
    assert {k: list(v.shape) for k, v in saved.items()} == {e["name"]: e["shape"] for e in listing}
    assert {"tokenizer_config.json", "config.json", "raycad.json"} <= {p.name for p in export.iterdir()}

    backbone = {k: v for k, v in mlm.state_dict().items() if k.startswith("caduceus.")}
    classifier = CaduceusForSequenceClassification.from_pretrained(export)
    ft = build_model(FinetuneConfig.load(overrides=[f"model.pretrained={export}"]), num_classes=2)
    for model in (classifier, ft):
        state = model.state_dict()
        for key, value in backbone.items():
            assert torch.equal(state[key], value), key
