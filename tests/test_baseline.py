"""The k-mer baseline: counts against a naive count, N handling, RC-canonical counting, and the fit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from raycad.baseline import canonical_kmers, fit_kmer_baseline, kmer_counts
from raycad.config import BaselineSection, ConfigError, FinetuneConfig
from raycad.data.splits import SplitRecords
from raycad.model import CaduceusTokenizer

RC = str.maketrans("ACGT", "TGCA")


def _ids(sequences: list[str], length: int) -> np.ndarray:
    return CaduceusTokenizer().encode_batch(sequences, length).input_ids


def _naive(sequence: str, k: int) -> dict[str, int]:
    """Every window of k bases of the sequence; windows with anything but ACGT are not k-mers."""
    counts: dict[str, int] = {}
    seq = sequence.upper()
    for i in range(len(seq) - k + 1):
        word = seq[i:i + k]
        if set(word) <= set("ACGT"):
            counts[word] = counts.get(word, 0) + 1
    return counts


def _column(word: str) -> int:
    return int(word.translate(str.maketrans("ACGT", "0123")), 4)


@pytest.mark.parametrize("k", [1, 3, 4, 6])
def test_counts_equal_a_naive_count(k: int) -> None:
    rng = np.random.default_rng(k)
    sequences = ["".join(rng.choice(list("ACGTacgt"), size=n)) for n in (40, 17, k, k - 1, 1)]
    counts, skipped = kmer_counts(_ids(sequences, 40), k)  # shorter records are left-padded
    assert counts.shape == (len(sequences), 4 ** k) and skipped == 0
    for row, seq in enumerate(sequences):
        expected = np.zeros(4 ** k)
        for word, n in _naive(seq, k).items():
            expected[_column(word)] = n
        np.testing.assert_array_equal(counts[row].toarray().ravel(), expected)
        assert counts[row].sum() == max(len(seq) - k + 1, 0)


def test_windows_over_n_are_skipped_and_counted() -> None:
    seq = "ACGTNACGTTAXCA"  # an N and an invalid character ([UNK]) inside the sequence
    counts, skipped = kmer_counts(_ids([seq, "NNNN"], 20), 3)
    expected = np.zeros(64)
    for word, n in _naive(seq, 3).items():
        expected[_column(word)] = n
    np.testing.assert_array_equal(counts[0].toarray().ravel(), expected)
    assert counts[0].sum() == 12 - 6  # 12 windows, 3 overlap the N and 3 the X
    assert counts[1].sum() == 0
    assert skipped == 6 + 2  # the all-N record's 2 windows; padding windows are not counted as skipped


@pytest.mark.parametrize("k", [2, 3, 5])
def test_canonical_counts_are_strand_independent(k: int) -> None:
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACGT"), size=60)) for _ in range(4)]
    forward, _ = kmer_counts(_ids(sequences, 60), k, canonical=True)
    reverse, _ = kmer_counts(_ids([s.translate(RC)[::-1] for s in sequences], 60), k, canonical=True)
    np.testing.assert_array_equal(forward.toarray(), reverse.toarray())
    plain, _ = kmer_counts(_ids(sequences, 60), k)
    assert not np.array_equal(plain.toarray(), kmer_counts(_ids([s.translate(RC)[::-1] for s in sequences], 60),
                                                            k)[0].toarray())
    # each canonical column is the sum of a k-mer's and its reverse complement's columns
    column, kept = canonical_kmers(k)
    expected = np.zeros((len(sequences), len(kept)))
    np.add.at(expected.T, column, plain.toarray().T)
    np.testing.assert_array_equal(forward.toarray(), expected)
    n_palindromes = 4 ** (k // 2) if k % 2 == 0 else 0
    assert len(kept) == (4 ** k + n_palindromes) // 2
    words = ["".join(w) for w in itertools.product("ACGT", repeat=k)]
    for word in words[:20]:  # a k-mer and its reverse complement share a column
        assert column[_column(word)] == column[_column(word.translate(RC)[::-1])]


def test_fit_chooses_k_on_validation_and_scores_with_the_model_metrics() -> None:
    # class 1 carries the motif TATAAA somewhere; only k >= 5 sees it whole
    rng = np.random.default_rng(0)

    def make(n: int) -> SplitRecords:
        labels = rng.integers(0, 2, n)
        seqs = []
        for y in labels:
            s = list(rng.choice(list("ACGT"), size=50))
            if y:
                at = rng.integers(0, 44)
                s[at:at + 6] = "TATAAA"
            seqs.append("".join(s))
        return SplitRecords(_ids(seqs, 50), labels)

    records = {"train": make(300), "validation": make(100), "test": make(100)}
    result = fit_kmer_baseline(records, 2, BaselineSection(k=[1, 6], C=[10.0]))
    assert result["k"] == 6 and result["features"] == 4096
    assert {c["k"] for c in result["candidates"]} == {1, 6}
    assert result["test_accuracy"] > 0.9 and result["val_n"] == 100 and result["test_n"] == 100
    for key in ("test_f1", "test_mcc", "test_auroc", "val_accuracy"):
        assert 0.5 < result[key] <= 1.0


def test_config_switch_and_validation() -> None:
    assert FinetuneConfig().baseline.enabled
    assert not FinetuneConfig.load(overrides=["baseline.enabled=false"]).baseline.enabled
    with pytest.raises(ConfigError, match="baseline.k"):
        FinetuneConfig.load(overrides=["baseline.k=[0]"])


def test_step_is_skipped_when_disabled() -> None:
    from raycad.baseline import baseline_step

    cfg = FinetuneConfig.load(overrides=["baseline.enabled=false"])
    assert baseline_step(cfg, data=None) is None  # never touches the data


def test_baseline_command_builds_the_finetune_config_and_prints_both_splits(monkeypatch, tmp_path, capsys):
    import json

    from raycad import baseline
    from raycad.cli import main

    seen = {}

    def fake_run(cfg):  # the data pass itself runs in the finetune / tune end-to-end tests
        seen["cfg"] = cfg
        return ({"name": "k-mer logistic regression", "k": 5, "C": 3.0, "canonical": True, "features": 512,
                 "records": {"train": 10}, "fit_time_s": 0.5, "val_accuracy": 0.8, "test_accuracy": 0.75,
                 "test_f1": 0.74}, {"source": "x.csv"})

    monkeypatch.setattr(baseline, "run_baseline", fake_run)
    out = tmp_path / "b.json"
    assert main(["baseline", "nontata", "--set", "baseline.canonical=true", "--json", str(out)]) == 0
    assert seen["cfg"].data.task == "human_nontata_promoters" and seen["cfg"].baseline.canonical
    err = capsys.readouterr().err
    assert "5-mer canonical LR (C=3)" in err and "0.7500" in err and "0.8000" in err
    assert json.loads(out.read_text())["baseline"]["k"] == 5
