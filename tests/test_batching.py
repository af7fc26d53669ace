"""Length-aware batching (`raycad.data.batching`): each batch padded only to its own bucket; inference
groups records of equal width so a record's padding never depends on its neighbours."""

from __future__ import annotations

import numpy as np

from raycad.data.batching import PaddingRule, bucket_batches, token_lengths, width_batches
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


def test_bucketed_shards_keep_ranks_in_step(ray_local) -> None:
    """Bucketing runs before the shard split: `streaming_split(equal=True)` (what Ray Train does) gives both
    ranks the same number of batches, each padded only to its own longest record; every batch is whole."""
    import threading

    import ray.data

    from raycad.config import FinetuneConfig
    from raycad.data.batching import bucket_dataset
    from raycad.data.loader import iter_batches

    rule = PaddingRule(MAX_LENGTH, "longest", 16)
    data = tokenized(203, seed=1)
    rows = [{"input_ids": data["input_ids"][i], "label": int(data["label"][i]), "key": int(data["key"][i])}
            for i in range(203)]
    bucketed = bucket_dataset(ray.data.from_items(rows, override_num_blocks=3), batch_size=8, rule=rule, seed=0,
                              window_batches=4).materialize()
    n_rows = bucketed.count()
    shards = bucketed.streaming_split(2, equal=True)
    cfg = FinetuneConfig().with_overrides({"data.rc_augment": 0.0})
    seen: dict[int, list] = {0: [], 1: []}

    def consume(rank: int) -> None:
        for batch in iter_batches(shards[rank], cfg, "train", 1, epoch=0, seed_offset=rank, rows_are_batches=True):
            seen[rank].append(batch)

    threads = [threading.Thread(target=consume, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(seen[0]) == len(seen[1]) == n_rows // 2 > 3  # same number of steps on both ranks
    for batch in seen[0] + seen[1]:
        ids = batch["input_ids"].numpy()
        assert ids.shape[1] == rule.width(int(token_lengths(ids).max())) and len(ids) <= 8
        assert batch["labels"].shape == (len(ids),)
    assert len({b["input_ids"].shape[1] for b in seen[0] + seen[1]}) > 3  # several buckets, not one width
