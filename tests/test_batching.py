"""Length-aware batching (`raycad.data.batching`): each batch padded only to its own bucket; inference
groups records of equal width so a record's padding never depends on its neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from raycad.data.batching import PaddingRule, bucket_batches, shuffled_rows, token_lengths, width_batches
from raycad.model.tokenizer import CaduceusTokenizer

MAX_LENGTH = 160


def tokenized(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGT"), size=k)) for k in rng.integers(10, 200, size=n)]
    return {"input_ids": CaduceusTokenizer().encode_batch(seqs, MAX_LENGTH).input_ids,
            "label": rng.integers(0, 2, size=n), "key": rng.integers(0, 2**63, size=n).astype(np.uint64)}


def test_bucket_batches_pad_each_batch_to_its_own_longest() -> None:
    rule = PaddingRule(MAX_LENGTH, "longest", 16)
    data = tokenized(100)
    out = bucket_batches(data, batch_size=16, rule=rule, seed=0)
    assert out["size"].tolist() == [16] * 6 + [4] and out["size"].sum() == 100
    seen = []
    for ids, labels, keys, width in zip(out["input_ids"], out["label"], out["key"], out["width"]):
        longest = int(token_lengths(ids).max())
        assert ids.shape[1] == width == rule.width(longest)  # its own longest, rounded up
        seen.extend(keys.tolist())
        rows = [int(np.flatnonzero(data["key"] == k)[0]) for k in keys]
        np.testing.assert_array_equal(labels, data["label"][rows])
        np.testing.assert_array_equal(ids, data["input_ids"][rows][:, MAX_LENGTH - width:])
    assert sorted(seen) == sorted(data["key"].tolist())  # every record once
    # buckets are tight: far less padding than padding everything to max_length
    padded = sum(ids.size for ids in out["input_ids"])
    real = int(np.minimum(token_lengths(data["input_ids"]), MAX_LENGTH).sum())
    assert real < padded < 0.8 * 100 * MAX_LENGTH
    # deterministic for a seed, another seed mixes records of equal width differently
    again = bucket_batches(data, batch_size=16, rule=rule, seed=0)
    assert all((a == b).all() for a, b in zip(out["key"], again["key"]))
    other = bucket_batches(data, batch_size=16, rule=rule, seed=1)
    assert any((a != b).any() for a, b in zip(out["key"], other["key"]))
    # max_length padding: every batch full width
    wide = bucket_batches(data, batch_size=16, rule=PaddingRule(MAX_LENGTH, "max_length"), seed=0)
    assert set(wide["width"].tolist()) == {MAX_LENGTH}


def test_width_batches_group_equal_widths() -> None:
    rule = PaddingRule(MAX_LENGTH, "longest", 16)
    lengths = np.array([5, 40, 17, 16, 33, 160, 1, 48, 200])
    groups = list(width_batches(rule, np.minimum(lengths, MAX_LENGTH), 2))
    assert [(w, rows.tolist()) for w, rows in groups] == [
        (16, [0, 3]), (16, [6]), (32, [2]), (48, [1, 4]), (48, [7]), (160, [5, 8])]
    # a token budget: at most max_tokens // width records per batch, one at least
    capped = list(width_batches(rule, np.minimum(lengths, MAX_LENGTH), 8, max_tokens=64))
    assert [(w, rows.tolist()) for w, rows in capped] == [
        (16, [0, 3, 6]), (32, [2]), (48, [1]), (48, [4]), (48, [7]), (160, [5]), (160, [8])]


def test_shuffled_rows_is_a_seeded_permutation() -> None:
    rows = list(range(50))
    once = list(shuffled_rows(iter(rows), 8, seed=3))
    assert sorted(once) == rows and once != rows
    assert list(shuffled_rows(iter(rows), 8, seed=3)) == once  # what keeps every rank on the same batch
    assert list(shuffled_rows(iter(rows), 8, seed=4)) != once
    assert sorted(shuffled_rows(iter(rows[:3]), 8, seed=0)) == rows[:3]  # fewer rows than the buffer


@pytest.mark.parametrize("materialize", [True, False])
def test_bucketed_ranks_train_on_slices_of_the_same_batches(ray_local, materialize) -> None:
    """Bucketing at the global batch: each rank reads the whole (unsplit) bucketed Dataset, streamed or
    materialized, and at every step holds its slice of the same global batch, padded to the same width: the
    same number of steps, disjoint records, every record once per epoch; the order changes between epochs."""
    import ray.data

    from raycad.config import FinetuneConfig
    from raycad.data.batching import bucket_dataset
    from raycad.data.loader import iter_batches

    rule = PaddingRule(MAX_LENGTH, "longest", 16)
    data = tokenized(203, seed=1)
    # label = the record's index, to tell which records a batch holds
    rows = [{"input_ids": data["input_ids"][i], "label": i, "key": int(data["key"][i])} for i in range(203)]
    bucketed = bucket_dataset(ray.data.from_items(rows, override_num_blocks=3), batch_size=16, rule=rule, seed=0,
                              ranks=2, window_batches=4)
    if materialize:
        bucketed = bucketed.materialize()
    cfg = FinetuneConfig().with_overrides({"data.rc_augment": 0.0})

    def epoch(rank: int, number: int) -> list[dict]:
        return list(iter_batches(bucketed, cfg, "train", 1, epoch=number, seed_offset=rank, rows_are_batches=True,
                                 shuffle_rows=4, rank=rank, world=2))

    ranks = [epoch(0, 0), epoch(1, 0)]
    assert len(ranks[0]) == len(ranks[1]) == bucketed.count() > 8  # every rank reads every batch
    seen = []
    for mine, theirs in zip(*ranks):
        assert mine["global_batch"] == theirs["global_batch"]
        assert mine["input_ids"].shape[1] == theirs["input_ids"].shape[1]  # in step: the same width
        both = np.concatenate([mine["input_ids"].numpy(), theirs["input_ids"].numpy()])
        assert both.shape[1] == rule.width(int(token_lengths(both).max())) and 2 <= len(both) <= 16 + 1
        assert abs(len(mine["input_ids"]) - len(theirs["input_ids"])) <= 1
        seen += mine["labels"].tolist() + theirs["labels"].tolist()
    assert sorted(seen) == list(range(203))  # each record once
    assert [b["global_batch"] for b in epoch(0, 1)] != [b["global_batch"] for b in ranks[0]]  # reshuffled



def test_length_bucketed_copies_the_data_it_buckets(ray_local) -> None:
    """What a tune trial or fold trains on: a copy with the training split bucketed at this config's global batch
    (the shared data keeps its records); data whose records all get one width stays as records."""
    import ray.data

    from raycad.config import FinetuneConfig
    from raycad.data.loader import PreparedData
    from raycad.train.trainer import length_bucketed

    data = tokenized(100, seed=2)
    rows = [{"input_ids": data["input_ids"][i], "label": int(data["label"][i]), "key": int(data["key"][i])}
            for i in range(100)]
    train = ray.data.from_items(rows)
    shared = PreparedData({"train": train, "validation": train}, ["0", "1"], MAX_LENGTH, "test")
    cfg = FinetuneConfig().with_overrides({"train.batch_size": 16, "scaling.num_workers": 2})
    copy, batch_rows = length_bucketed(shared, cfg)
    assert shared.datasets["train"] is train and copy.datasets["validation"] is train
    assert batch_rows == copy.datasets["train"].count() == 7  # ceil(100 / 16) global batches
    assert sum(len(r["label"]) for r in copy.datasets["train"].iter_rows()) == 100
    same_width = PreparedData({"train": train, "validation": train}, ["0", "1"], MAX_LENGTH, "test")
    assert length_bucketed(same_width, cfg.with_overrides({"data.padding": "max_length"}))[1] is None
