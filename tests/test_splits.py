"""raycad.data.splits: record ids per split, duplicates across splits, stratified seeded CV folds."""

from __future__ import annotations

import csv

import numpy as np

from raycad.data.splits import SplitRecords, audit_splits, count_duplicates, fold_of, row_hashes
from raycad.model import CaduceusTokenizer
from raycad.model.tokenizer import reverse_complement_ids

RC = str.maketrans("ACGT", "TGCA")


def _records(sequences: list[str], labels: list[int], prefix: str) -> SplitRecords:
    ids = CaduceusTokenizer().encode_batch(sequences, 12).input_ids
    return SplitRecords(ids, labels, np.array([f"{prefix}{i}" for i in range(len(labels))]), row_hashes(ids),
                        row_hashes(reverse_complement_ids(ids, padding_side="left")))


def test_duplicates_across_splits_exact_and_reverse_complement(tmp_path):
    train = ["ACGTTTGA", "GGGCCCAT", "ATATATCG", "CCCAAAGT"]
    test = [train[0], "TTTTGGGA", train[2].translate(RC)[::-1], train[1].lower(), "ACGTTTG"]
    val = [train[3].translate(RC)[::-1]]
    records = {"train": _records(train, [0, 1, 0, 1], "tr"), "validation": _records(val, [1], "va"),
               "test": _records(test, [0, 1, 0, 1, 1], "te")}
    report = audit_splits(records, tmp_path / "splits")
    dup = report["duplicates"]
    # a soft-masked copy is the same sequence; a prefix is not; the RC copy counts once, as reverse complement
    assert dup["train/test"] == {"records": 5, "exact": 2, "reverse_complement": 1}
    assert dup["train/validation"] == {"records": 1, "exact": 0, "reverse_complement": 1}
    assert dup["validation/test"] == {"records": 5, "exact": 0, "reverse_complement": 0}
    assert count_duplicates({"train": records["train"]}) == {}
    with open(tmp_path / "splits" / "test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], int(r["label"])) for r in rows] == [(f"te{i}", y) for i, y in enumerate([0, 1, 0, 1, 1])]
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["test.csv", "train.csv", "validation.csv"]


def test_folds_are_stratified_seeded_and_order_independent():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(503, int), np.ones(297, int), np.full(50, 2)]
    keys = rng.integers(0, 2 ** 63, len(labels)).astype(np.uint64)
    keys[10] = keys[11] = keys[12]  # three copies of one sequence (same class)
    folds = fold_of(labels, keys, 5, seed=0)
    for label, n in ((0, 503), (1, 297), (2, 50)):
        sizes = np.bincount(folds[labels == label], minlength=5)
        assert sizes.max() - sizes.min() <= 3 and sizes.sum() == n  # stratified: each class cut evenly
    assert folds[10] == folds[11] == folds[12]  # identical sequences share a fold
    np.testing.assert_array_equal(folds, fold_of(labels, keys, 5, seed=0))  # deterministic
    order = rng.permutation(len(labels))
    np.testing.assert_array_equal(fold_of(labels[order], keys[order], 5, seed=0), folds[order])
    assert (fold_of(labels, keys, 5, seed=1) != folds).mean() > 0.5  # the seed changes the assignment


def test_collect_split_keeps_every_record_and_token_ids_up_to_the_limit():
    from raycad.data.splits import collect_split

    ids = CaduceusTokenizer().encode_batch(["ACGT", "GGCA", "TTAC", "ACGT", "CCCC"], 6).input_ids

    class Batches:  # what collect_split reads of a Ray Dataset
        def iter_batches(self, batch_format, batch_size):
            assert batch_format == "numpy"
            yield {"input_ids": ids[:3], "label": np.array([0, 1, 0]), "id": np.array(["a", "b", "c"]),
                   "key": np.array([1, 2, 3], np.uint64)}
            yield {"input_ids": ids[3:], "label": np.array([1, 1]), "id": np.array(["d", "e"]),
                   "key": np.array([1, 5], np.uint64)}

    for limit, kept in ((None, 5), (4, 4), (0, 0)):
        rec = collect_split(Batches(), input_ids_limit=limit)
        assert len(rec) == 5 and len(rec.input_ids) == kept and rec.ids.tolist() == ["a", "b", "c", "d", "e"]
        assert rec.keys.tolist() == [1, 2, 3, 1, 5] and rec.hashes[0] == rec.hashes[3] != rec.hashes[1]
    np.testing.assert_array_equal(collect_split(Batches(), 4).input_ids, ids[:4])
