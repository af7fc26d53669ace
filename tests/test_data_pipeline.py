"""raycad.data: task registry, bundled demo, vectorized preprocessing, seeded splits, the batch collator, and
`prepare_datasets` / `iter_batches` end to end on a local Ray (the bundled demo and a local copy of a
benchmark in the Hugging Face parquet layout)."""

from __future__ import annotations

import gzip
import re
import runpy
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raycad.config import ConfigError, FinetuneConfig
from raycad.data import BUNDLED_DEMO, TASKS, get_task
from raycad.data import preprocess as pp
from raycad.data.loader import BatchCollator, make_collator
from raycad.model.tokenizer import PAD_ID, CaduceusTokenizer, reverse_complement_ids


def _tokenize(seqs, labels, *, ids=None, max_length=8, truncation="right"):
    table = pa.table({"sequence": pa.array(seqs, pa.string()), "label": pa.array(labels, pa.int64()),
                      "id": pa.array(ids or [f"r{i}" for i in range(len(seqs))])})
    return pp.tokenize_batch(pp.add_keys(table), max_length=max_length, truncation=truncation)


# ---- registry --------------------------------------------------------------------------------------------------
def test_task_registry_matches_the_published_facts(shared_dir):
    assert len(TASKS) == 9
    facts = (shared_dir / "reference" / "published_results.md").read_text()
    sizes = dict(re.findall(r"(\w+) ([\d,]+/[\d,]+), \d", facts))
    short = {"dummy_mouse_enhancers_ensembl": "mouse_enhancers", "demo_coding_vs_intergenomic_seqs":
             "coding_vs_intergenomic", "demo_human_or_worm": "human_or_worm"}
    for task in TASKS.values():
        name = short.get(task.name, task.name.removeprefix("human_"))
        assert f"{task.train_size:,}/{task.test_size:,}" == sizes[name], task.name
        assert task.hf_id == f"katarinagresova/Genomic_Benchmarks_{task.name}"
        assert get_task(task.name) is task and all(get_task(a) is task for a in task.aliases)
    assert {t: get_task(t).max_length for t in ("mouse", "coding", "worm", "cohn", "enhancers_ensembl",
                                                 "regulatory", "ocr", "nontata")} == {
        "mouse": 1024, "coding": 200, "worm": 200, "cohn": 500, "enhancers_ensembl": 512, "regulatory": 512,
        "ocr": 512, "nontata": 251}
    assert get_task("Human-Nontata-Promoters").class_names == ("negative", "positive")
    assert get_task("regulatory").class_names == ("enhancer", "ocr", "promoter")
    assert get_task("katarinagresova/Genomic_Benchmarks_demo_human_or_worm").class_names == ("human", "worm")
    assert get_task("nontata").published_accuracy["Caduceus-PS"] == 0.945
    with pytest.raises(ConfigError, match="unknown Genomic Benchmarks task 'promoters'.*nontata"):
        get_task("promoters")


def test_benchmarks_command_prints_every_task(capsys):
    import argparse

    from raycad.data import cli

    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["benchmarks"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert all(task.name in out for task in TASKS.values()) and "0.945" in out


# ---- bundled demo ----------------------------------------------------------------------------------------------
def test_bundled_demo_is_an_honest_stratified_split_of_the_published_test_set(shared_dir, tmp_path, monkeypatch):
    table = pq.read_table(BUNDLED_DEMO)
    assert BUNDLED_DEMO.stat().st_size < 700_000
    assert b"TEST split" in table.schema.metadata[b"source"]
    frame = table.to_pandas()
    source = pd.read_csv(shared_dir / "data" / "human_nontata_promoters.test.csv.gz")
    rows = frame["id"].str.removeprefix("nontata_test_").astype(int)  # rows are shuffled; ids = source rows
    assert sorted(rows) == list(range(len(source))) and frame["label"].nunique() == 2
    assert frame["sequence"].tolist() == source["sequence"][rows].tolist()
    assert frame["label"].tolist() == source["label"][rows].tolist()
    assert 0.3 < frame["label"][:64].mean() < 0.8  # the first rows hold both classes (data.limit)
    counts = pd.crosstab(frame["split"].astype(str), frame["label"])
    assert counts.loc["train"].tolist() == [3295, 3931]
    assert counts.loc["validation"].tolist() == counts.loc["test"].tolist() == [412, 492]
    # The committed script regenerates the same table.
    out = tmp_path / "demo.parquet"
    monkeypatch.setattr(sys, "argv", ["make_demo_data.py", "--out", str(out)])
    runpy.run_path(str(BUNDLED_DEMO.parents[3] / "tools" / "make_demo_data.py"), run_name="__main__")
    assert pq.read_table(out).equals(table)


# ---- preprocessing ---------------------------------------------------------------------------------------------
def test_tokenize_batch_truncates_and_counts():
    out = _tokenize(["ACGTACGTAC", "acg", "GGXX"], [0, 1, 1], truncation="center")
    assert out["input_ids"].dtype == np.uint8 and out["input_ids"].shape == (3, 8)
    assert out["input_ids"][0].tolist() == CaduceusTokenizer()("CGTACGTA")["input_ids"]
    assert out["input_ids"][1].tolist() == [PAD_ID] * 5 + [7, 8, 9]
    assert out["truncated"].tolist() == [True, False, False] and out["label"].tolist() == [0, 1, 1]
    assert out["n_invalid"].tolist() == [0, 0, 2] and out["id"].tolist() == ["r0", "r1", "r2"]
    assert set(out) == {"id", "input_ids", "label", "key", *pp.STATS_COLUMNS}
    summary = pp.summarize(pa.table({k: out[k] for k in ("label", *pp.STATS_COLUMNS)}))
    assert dict(zip(summary["label"].tolist(), summary["records"].tolist())) == {0: 1, 1: 2}
    assert summary["truncated"].tolist() == [1, 0] and summary["invalid_characters"].tolist() == [0, 2]


def test_validation_split_is_stratified_seeded_and_order_free():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [500, 300, 37])
    keys = rng.integers(0, 2**63, size=len(labels), dtype=np.uint64)

    def split(order, seed):
        batch = pa.table({"label": labels[order], "key": keys[order]})
        limits, has = pp.validation_thresholds(labels[order], keys[order], 0.1, seed, 3)
        marked = pp.mark_validation(batch, limits=limits, has=has, seed=seed)
        return set(keys[order][marked.column("is_validation").to_numpy(zero_copy_only=False)].tolist())

    chosen = split(np.arange(len(labels)), seed=1)
    assert chosen == split(rng.permutation(len(labels)), seed=1)
    assert chosen != split(np.arange(len(labels)), seed=2)
    per_class = [sum(k in chosen for k in keys[labels == c].tolist()) for c in range(3)]
    assert per_class == [50, 30, 4]


def test_collator_augments_deterministically_per_record_and_conjoins():
    tok = CaduceusTokenizer()
    ids = tok(["ACGTTT", "GGA", "C", "TTTTTG"] * 8, padding="max_length", max_length=8,
              return_tensors="np")["input_ids"].astype(np.uint8)
    keys = np.arange(len(ids), dtype=np.uint64) * np.uint64(7919)
    batch = {"input_ids": ids, "label": np.arange(len(ids)) % 2, "key": keys}

    plain = BatchCollator()(batch)
    assert plain["input_ids"].dtype.is_floating_point is False and plain["input_ids"].tolist() == ids.tolist()
    assert plain["labels"].tolist() == (np.arange(len(ids)) % 2).tolist()

    half = BatchCollator(rc_prob=0.5, salt=(0, 1, 0))
    out = half(batch)["input_ids"].numpy()
    flipped = (out != ids).any(axis=1)
    assert 0 < flipped.sum() < len(ids)
    np.testing.assert_array_equal(out[flipped], reverse_complement_ids(ids[flipped], padding_side="left"))
    order = np.random.default_rng(1).permutation(len(ids))  # same records in another order: same choices
    shuffled = half({k: v[order] for k, v in batch.items()})["input_ids"].numpy()
    np.testing.assert_array_equal(shuffled, out[order])
    other_epoch = BatchCollator(rc_prob=0.5, salt=(0, 2, 0))(batch)["input_ids"].numpy()
    assert (other_epoch != out).any()
    assert (BatchCollator(rc_prob=1.0)(batch)["input_ids"].numpy() ==
            reverse_complement_ids(ids.astype(np.int64), padding_side="left")).all()

    conj = BatchCollator(conjoin=True, padding="longest")(batch)["input_ids"]
    assert tuple(conj.shape) == (len(ids), 6, 2)
    np.testing.assert_array_equal(conj[..., 1].numpy(), reverse_complement_ids(ids[:, 2:].astype(np.int64)))

    cfg = FinetuneConfig.load(overrides=["head.conjoin_eval=true", "data.rc_augment=0.3"])
    assert (make_collator(cfg, "train", 0).rc_prob, make_collator(cfg, "train", 0).conjoin) == (0.3, False)
    assert (make_collator(cfg, "test", 0).rc_prob, make_collator(cfg, "test", 0).conjoin) == (0.0, True)


# ---- end to end on Ray -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_prepare_bundled_demo_and_iter_batches(ray_local):
    from raycad.data import iter_batches, prepare_datasets

    cfg = FinetuneConfig.load(overrides=["data.limit=300"])
    data = prepare_datasets(cfg)
    assert (data.class_names, data.num_classes, data.max_length) == (["negative", "positive"], 2, 251)
    assert "TEST split" in data.note and set(data.datasets) == {"train", "validation", "test"}
    report = data.report()
    assert {name: s["records"] for name, s in report["splits"].items()} == {
        "train": 300, "validation": 300, "test": 300}
    assert all(not s["skipped"] and not s["truncated"] for s in report["splits"].values())

    def epoch_rows(epoch):
        batches = list(iter_batches(data.datasets["train"], cfg, "train", batch_size=64, epoch=epoch))
        assert batches[0]["input_ids"].shape == (64, 251) and batches[0]["labels"].shape == (64,)
        return sorted(map(tuple, np.concatenate([b["input_ids"].numpy() for b in batches]).tolist()))

    first = epoch_rows(0)  # the augmentation is a function of (record, seed, epoch): see the collator test
    assert len(first) == 300 and first != epoch_rows(1)

    # Evaluation batches: unaugmented, conjoined, and equal to the per-character tokenizer on the records.
    conjoined = cfg.with_overrides({"head.conjoin_eval": True})
    batches = list(iter_batches(data.datasets["test"], conjoined, "test", batch_size=100, epoch=0))
    assert tuple(batches[0]["input_ids"].shape) == (100, 251, 2)
    ids = np.concatenate([b["input_ids"].numpy() for b in batches])
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    np.testing.assert_array_equal(ids[..., 1], reverse_complement_ids(ids[..., 0]))
    demo = pq.read_table(BUNDLED_DEMO).to_pandas()
    test = demo[demo["split"] == "test"]
    tok = CaduceusTokenizer()
    expected = {tuple(tok(s)["input_ids"]) + (int(y),) for s, y in zip(test["sequence"], test["label"])}
    got = {tuple(row) + (int(y),) for row, y in zip(ids[..., 0].tolist(), labels)}
    assert len(got) == 300 and got <= expected


@pytest.mark.slow
def test_prepare_task_from_a_local_hf_copy_with_bad_records(ray_local, tmp_path, shared_dir):
    from raycad.data import prepare_datasets

    with gzip.open(shared_dir / "data" / "human_nontata_promoters.test.csv.gz", "rt") as f:
        source = pd.read_csv(f).iloc[:400]
    train, test = source.iloc[:300].copy(), source.iloc[300:]
    train.loc[train.index[:3], "sequence"] = ""            # empty records
    train.loc[train.index[3], "sequence"] = "ACGT" * 100     # longer than the task's 251
    train.loc[train.index[4:6], "sequence"] = train["sequence"].iloc[4:6].str.replace("T", "U")  # RNA
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"seq": train["sequence"], "label": train["label"]}),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"seq": test["sequence"], "label": test["label"]}),
                   tmp_path / "data" / "test-00000-of-00001.parquet")

    cfg = FinetuneConfig.load(overrides=["data.task=nontata", f"data.train={tmp_path}", "data.bad_records=skip",
                                         "data.truncation=left"])
    data = prepare_datasets(cfg)
    assert (data.class_names, data.max_length, data.task.name) == (["negative", "positive"], 251,
                                                                  "human_nontata_promoters")
    splits = data.report()["splits"]
    assert splits["train"]["records"] + splits["validation"]["records"] == 297
    kept_labels = train["label"].iloc[3:]
    assert splits["validation"]["records"] == sum(round(0.1 * n) for n in kept_labels.value_counts())
    assert splits["test"]["records"] == 100
    assert sum(splits["train"]["skipped"].values()) == 3
    assert splits["train"]["truncated"] + splits["validation"]["truncated"] == 1
    assert (splits["train"]["rna_records"], splits["test"]["rna_records"]) == (2, 0)  # counted where read

    strict = cfg.with_overrides({"data.bad_records": "error"})
    with pytest.raises(Exception, match=r"train-00000-of-00001.parquet.*empty"):
        prepare_datasets(strict).datasets["train"].take_all()


def test_training_shuffle_buffer_covers_the_shard_when_it_fits(ray_local):
    """A shard that fits the buffer's token budget is reshuffled whole every epoch, so an epoch's first
    batches draw from every part of it; the old default buffer (1,024 rows) only drew from its beginning."""
    import ray

    from raycad.data import iter_batches
    from raycad.data.loader import SHUFFLE_BUFFER_TOKENS, shuffle_buffer_rows

    assert shuffle_buffer_rows(3000, 251, 16) == 3000  # fits: the whole shard
    assert shuffle_buffer_rows(10**9, 251, 16) == SHUFFLE_BUFFER_TOKENS // 251  # capped by the token budget
    assert shuffle_buffer_rows(100, 10**9, 16) == 64  # never fewer than 4 batches
    n = 3000
    ds = ray.data.from_items([{"input_ids": np.full(8, 7, np.uint8), "label": i, "key": np.uint64(i)}
                              for i in range(n)]).materialize()
    cfg = FinetuneConfig.load(overrides=["data.rc_augment=0"])

    def first_rows(epoch, **kw):
        batches = iter_batches(ds, cfg, "train", batch_size=16, epoch=epoch, **kw)
        return np.concatenate([next(batches)["labels"].numpy() for _ in range(8)])

    assert first_rows(0).max() < 2000  # the default buffer (1,024 rows + a block): only the first part
    whole = [first_rows(epoch, shuffle_rows=n) for epoch in (0, 1)]
    assert all(rows.max() > 2000 and rows.min() < 1000 for rows in whole)
    assert set(whole[0]) != set(whole[1])  # a different permutation every epoch
