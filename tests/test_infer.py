"""Batch inference (`raycad.infer`): predict on every input kind in order with row numbers, predict ==
evaluate, and the padding rule of raycad.json honoured. A random-init tiny model is exported once; no fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raycad.config import FinetuneConfig
from raycad.data.batching import PaddingRule
from raycad.train.metrics import EvalAccumulator

CLASSES = ["neg", "pos"]
MAX_LENGTH = 64


def export_tiny(directory: Path, **meta_overrides) -> Path:
    from raycad.train.build import build_model
    from raycad.train.checkpoint import export_model

    cfg = FinetuneConfig().with_overrides({"model.preset": "caduceus-ph-1k-d128-l4",
                                           "model.overrides": {"d_model": 32, "n_layer": 1}, "train.seed": 3})
    model = build_model(cfg, 2, CLASSES)
    with torch.no_grad():  # a sharper head than a random init has, so that inputs visibly change the output
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.weight.mul_(50)
        if head.bias is not None:
            head.bias.zero_()
    meta = {"class_names": CLASSES, **PaddingRule(MAX_LENGTH, "longest", 16).to_meta(), "truncation": "right",
            "conjoin_eval": True, "config": cfg.to_dict(), **meta_overrides}
    return export_model(model, directory, meta=meta)


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    """40 records of 5-90 bp (some longer than MAX_LENGTH), with a duplicated id."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 90, size=40)
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in lengths]
    ids = [f"r{i}" for i in range(40)]
    ids[7] = ids[3]  # duplicate ids must stay distinguishable
    return pd.DataFrame({"id": ids, "sequence": seqs, "label": rng.integers(0, 2, size=40)})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "model")


def in_process(model_dir: Path, seqs: list[str]) -> np.ndarray:
    """The reference: one in-process call (batch size and neighbours do not change a record's result)."""
    from raycad.infer import Predictor, load_for_inference

    model, spec = load_for_inference(model_dir)
    out = Predictor.from_model(model, spec, batch_size=5, device="cpu")({"sequence": np.array(seqs, dtype=object)})
    return np.stack([out[f"prob_{c}"] for c in CLASSES], axis=1)


def test_padding_rule_is_the_models(model_dir, records) -> None:
    """Each model batch is cut to its own longest record rounded up to the multiple; max_length keeps all
    columns; the rule changes the probabilities (left [PAD] passes through the scan), so it must be followed."""
    from raycad.data.preprocess import conjoin
    from raycad.infer import Predictor, load_for_inference
    from raycad.model import CaduceusTokenizer

    model, spec = load_for_inference(model_dir)
    assert spec.padding == PaddingRule(MAX_LENGTH, "longest", 16) and spec.conjoin
    seqs = ["ACGTACGTAC" * 2, "ACGTAC" * 3]  # 20 and 18 bases: one model batch of width 32
    ids = CaduceusTokenizer().encode_batch(seqs, MAX_LENGTH).input_ids.astype(np.int64)
    with torch.no_grad():
        direct = {w: model(input_ids=torch.from_numpy(conjoin(ids[:, -w:]))).logits.softmax(-1).numpy()
                  for w in (32, MAX_LENGTH)}
    got = in_process(model_dir, seqs)
    np.testing.assert_allclose(got, direct[32], rtol=0, atol=1e-7)
    assert np.abs(direct[32] - direct[MAX_LENGTH]).max() > 1e-6
    wide = Predictor.from_model(model, spec.__class__(**{**spec.__dict__, "padding": PaddingRule(MAX_LENGTH, "max_length")}))
    out = wide({"sequence": np.array(seqs, dtype=object)})
    np.testing.assert_allclose(np.stack([out["prob_neg"], out["prob_pos"]], 1), direct[MAX_LENGTH], rtol=0,
                               atol=1e-7)

    # an export without the keys (older raycad) is scored as it was then: always max_length
    assert PaddingRule.from_meta({"max_length": 64}) == PaddingRule(64, "max_length")
    assert PaddingRule.from_meta({"max_length": 64, "padding": "longest"}) == PaddingRule(64, "longest", 1)
    with pytest.raises(ValueError, match="raycad.json: no max_length"):
        PaddingRule.from_meta({})
    assert [PaddingRule(64, "longest", 16).width(n) for n in (1, 16, 17, 63, 64)] == [16, 16, 32, 64, 64]


def test_cpu_model_batches_are_capped_by_hidden_values(model_dir, records, monkeypatch) -> None:
    """On CPU a model batch holds at most CPU_BATCH_VALUES hidden values (records x width x d_model x strands),
    so long records go in small batches; the probabilities are those of uncapped batches."""
    from raycad.data import batching
    from raycad.infer import Predictor, load_for_inference

    model, spec = load_for_inference(model_dir)
    monkeypatch.setattr(batching, "CPU_BATCH_VALUES", 32 * 2 * 64 * 3)  # d_model 32, conjoined: 192 tokens
    capped = Predictor.from_model(model, spec, batch_size=128, device="cpu")
    assert capped.max_tokens == 192
    shapes: list[tuple[int, ...]] = []
    outputs = capped.outputs
    capped.outputs = lambda ids: shapes.append(tuple(ids.shape)) or outputs(ids)
    batch = {"sequence": records.sequence.to_numpy(dtype=object)}
    got = capped(batch)
    widths = [spec.padding.width(min(len(seq), MAX_LENGTH)) for seq in records.sequence]
    want_batches = [min(192 // w, widths.count(w)) for w in sorted(set(widths))]  # the first batch of each width
    firsts = [rows for i, (rows, width, _) in enumerate(shapes) if i == 0 or shapes[i - 1][1] != width]
    assert firsts == want_batches and (3, 64, 2) in shapes
    assert sum(rows for rows, _, _ in shapes) == len(records)
    uncapped = Predictor.from_model(model, spec, batch_size=128, device="cpu")
    uncapped.max_tokens = None
    want = uncapped(batch)
    np.testing.assert_allclose(got["prob_pos"], want["prob_pos"], rtol=0, atol=1e-6)


def test_rna_is_scored_as_its_dna(model_dir) -> None:
    """Training reads U as T (raycad.data.records.rna_to_dna); predict must too, not score [UNK] tokens."""
    dna = ["ACGTTGCA" * 3, "TTTACGTA" * 2]
    rna = [s.replace("T", "U") for s in dna]
    np.testing.assert_allclose(in_process(model_dir, rna), in_process(model_dir, dna), rtol=0, atol=1e-7)


def test_predict_every_format_in_order_with_rows(ray_local, model_dir, records, tmp_path) -> None:
    from raycad.infer import predict

    expected = in_process(model_dir, records.sequence.tolist())
    n_long = int((records.sequence.str.len() > MAX_LENGTH).sum())
    assert n_long > 0
    records[["id", "sequence"]].to_csv(tmp_path / "in.csv", index=False)
    records[["id", "sequence"]].to_parquet(tmp_path / "in.parquet")
    (tmp_path / "in.fa").write_text("".join(f">{i} some description\n{s}\n" for i, s in
                                            zip(records.id, records.sequence)))
    parts = tmp_path / "parts"  # several files: rows follow the files' path order
    parts.mkdir()
    for k, start in enumerate(range(0, 40, 15)):
        records.iloc[start:start + 15][["id", "sequence"]].to_csv(parts / f"part{k}.csv", index=False)
    inputs = {"in.csv": tmp_path / "in.csv", "in.parquet": tmp_path / "in.parquet", "in.fa": tmp_path / "in.fa",
              "glob": str(parts / "part*.csv")}
    for name, source in inputs.items():
        out = tmp_path / f"{name}.out.{'csv' if name == 'in.fa' else 'parquet'}"  # CSV by extension
        summary = predict(model_dir, source, out, batch_size=8, actors=1)
        got = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
        assert list(got.columns) == ["row", "id", "predicted_label", "prob_neg", "prob_pos", "truncated"], name
        assert got.row.tolist() == list(range(40)) and got.id.tolist() == records.id.tolist(), name
        np.testing.assert_allclose(got[["prob_neg", "prob_pos"]].to_numpy(), expected, rtol=0, atol=1e-6,
                                   err_msg=name)  # float32 rounding of other batch sizes; padding moves 1e-4
        assert got.truncated.tolist() == (records.sequence.str.len() > MAX_LENGTH).tolist()
        assert summary.records == 40 and summary.truncated == n_long
        assert f"{n_long} record(s) longer than the model's max_length 64 were cut" in summary.describe()
    assert (got.predicted_label == np.array(CLASSES)[expected.argmax(1)]).all()


def test_ordered_keeps_input_order_through_two_actors(ray_local, model_dir, records) -> None:
    """A dataset carries its own copy of the DataContext: the order flag must go on it, not on the driver's
    current context (which left 9,034 predictions out of order while their `row` numbers counted up)."""
    import ray

    from raycad.infer.score import ordered, score

    sequences = [seq for _ in range(5) for seq in records.sequence]  # 200 records
    rows = [{"id": f"r{k}", "sequence": seq} for k, seq in enumerate(sequences)]
    ds = ray.data.from_items(rows, override_num_blocks=50)
    scored = ordered(score(ds, model_dir, batch_size=4, actors=2, window=4))
    assert scored.context.execution_options.preserve_order
    assert [r["id"] for r in scored.iter_rows()] == [r["id"] for r in rows]


def test_evaluate_sums_what_predict_writes(ray_local, model_dir, records) -> None:
    """`evaluate` sums exactly the probabilities `predict` writes (checked against the same in-process
    reference as above); the work ran in actor processes, not in this one."""
    import os

    import ray.data

    from raycad.infer import evaluate

    probs = in_process(model_dir, records.sequence.tolist()).astype(np.float64)
    acc = EvalAccumulator(2)
    acc.update(torch.from_numpy(probs).log(), torch.from_numpy(records.label.to_numpy()))
    expected = acc.compute(prefix="test_")
    result = evaluate(ray.data.from_pandas(records), model_dir, 2, batch_size=8, actors=1)
    for key in ("test_accuracy", "test_loss", "test_auroc", "test_mcc", "test_n"):
        assert result.metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert result.processes and os.getpid() not in result.processes


def test_evaluate_checkpoint_on_actors(ray_local, tmp_path) -> None:
    """The end-of-training path: a `ray.train.Checkpoint` scored on tokenized rows by actors, with the
    padding rule and conjoining of the checkpoint's config, equal to the in-process reference."""
    import os

    import ray.data
    import ray.train

    from raycad.data.preprocess import conjoin
    from raycad.model import CaduceusTokenizer
    from raycad.train.build import build_model
    from raycad.train.checkpoint import save_training_checkpoint
    from raycad.train.loop import build_optimizer, build_scheduler
    from raycad.train.trainer import evaluate_split

    cfg = FinetuneConfig().with_overrides({"model.preset": "caduceus-ph-1k-d128-l4", "data.pad_multiple": 8,
                                           "model.overrides": {"d_model": 32, "n_layer": 1}})
    model = build_model(cfg, 2, CLASSES)
    optimizer = build_optimizer(model, cfg)
    save_training_checkpoint(tmp_path, model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg, 10),
                             state={"config": cfg.to_dict(), "num_classes": 2, "class_names": CLASSES,
                                    "max_length": 32})
    seqs = ["ACGT" * 3, "GATTACA" * 4, "CCGGA" * 2, "T" * 30]
    ids = CaduceusTokenizer().encode_batch(seqs, 32).input_ids
    rows = ray.data.from_items([{"input_ids": i, "label": n % 2, "key": n} for n, i in enumerate(ids)])
    got = evaluate_split(cfg, ray.train.Checkpoint.from_directory(str(tmp_path)), rows, "test", 2)
    with torch.no_grad():  # widths 16, 32, 16, 32 under pad_multiple 8; both strands
        logits = torch.cat([model.eval()(input_ids=torch.from_numpy(conjoin(ids[[k], 32 - w:].astype(np.int64)))).logits
                            for k, w in enumerate((16, 32, 16, 32))])
    acc = EvalAccumulator(2)
    acc.update(logits, torch.tensor([0, 1, 0, 1]))
    assert got.metrics["test_loss"] == pytest.approx(acc.compute()["loss"], abs=1e-6)
    assert got.processes and os.getpid() not in got.processes


def test_predict_errors_name_the_problem(model_dir, tmp_path) -> None:
    from raycad.infer import predict

    with pytest.raises(ValueError, match=r"out\.txt: unknown format"):
        predict(model_dir, tmp_path / "x.fa", tmp_path / "out.txt")
    with pytest.raises(FileNotFoundError, match="not an exported model directory"):
        predict(tmp_path, tmp_path / "x.fa", tmp_path / "out.csv")
    meta = json.loads((model_dir / "raycad.json").read_text())
    assert meta["padding"] == "longest" and meta["pad_multiple"] == 16
