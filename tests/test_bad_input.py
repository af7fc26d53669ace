"""The bad-input matrix: each bad input to ``raycad finetune`` / ``raycad predict`` ends with one line on stderr
naming the file/record/field and the problem, a non-zero exit, and no model.

Ray-free cases run with `raycad.runtime.init_ray` replaced by a tripwire: they must fail before Ray starts.
The cases that need data read by Ray (a stray label, a single class, non-DNA) share one Ray instance and
a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from raycad import runtime
from raycad.cli import main

ACGT = "ACGTTGCAAGCTTAGC"


def _csv(path: Path, rows: list[tuple[str, object]] | None, header: str = "sequence,label") -> Path:
    lines = [] if rows is None else [header, *(f"{s},{label}" for s, label in rows)]
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def _binary(n: int = 24) -> list[tuple[str, object]]:
    return [(ACGT[i % 7:] + ACGT[: i % 7], i % 2) for i in range(n)]


RAY_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)*\((raylet\)|.*?\bpid=\d+)")
"""The prefix Ray's log monitor puts on a worker's or raylet's output it forwards to the driver."""


def _one_error_line(err: str, ray_logs: bool = False) -> str:
    """The one ``raycad: ...`` line of stderr. ``ray_logs``: in-process under pytest's capture, Ray's own log
    lines are on stderr too (the CLI files them in a log; see tests/test_runtime.py): ours must be the last.
    Lines Ray's log monitor forwards late from an earlier test's workers (the session's Ray instance) are
    not this command's output and are left out."""
    lines = [line for line in err.splitlines() if line.strip() and not RAY_WORKER_LINE.match(line)]
    ours = [line for line in lines if line.startswith("raycad: ")]
    assert len(ours) == 1 and lines[-1] == ours[0], f"expected one raycad line, last, got:\n{err}"
    if ray_logs:  # Ray Data logs a failed task's traceback itself; ours is the unwrapped message
        assert "Traceback" not in ours[0] and "RayTaskError" not in ours[0], err
    else:
        assert len(lines) == 1, f"expected one line, got:\n{err}"
    return ours[0]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the command gets as far as starting Ray."""
    def tripwire(*args, **kwargs):
        raise AssertionError("Ray was started before the bad input was reported")

    monkeypatch.setattr(runtime, "init_ray", tripwire)


def _finetune_cases(d: Path) -> list[tuple[str, list[str], str]]:
    (d / "emptydir").mkdir()
    (d / "bad.yaml").write_text("optim: {lr: [unclosed\n")
    good = _csv(d / "good.csv", _binary())
    return [
        ("missing file", [str(d / "missing.csv")], r"missing\.csv: no such file"),
        ("empty directory", [str(d / "emptydir")], r"emptydir: no sequence files found"),
        ("glob matching nothing", [str(d / "nothing*.csv")], r"nothing\*\.csv: nothing matches"),
        ("empty csv", [str(_csv(d / "empty.csv", None))], r"empty\.csv: empty file"),
        ("header-only csv", [str(_csv(d / "header.csv", []))], r"header\.csv: no records"),
        ("float labels", [str(_csv(d / "float.csv", [("ACGT", "0.0"), ("ACGA", "1.0")]))],
         r"float\.csv: labels are decimal numbers \('0\.0'"),
        ("no label column", [str(_csv(d / "nolabel.csv", [("ACGT", "x")], header="sequence,other"))],
         r"nolabel\.csv: no label column 'label'"),
        ("lr=true", [str(good), "--set", "optim.lr=true"], r"optim\.lr: .*not a boolean"),
        ("lr=.inf", [str(good), "--set", "optim.lr=.inf"], r"optim\.lr: Input should be a finite number"),
        ("negative max_length", [str(good), "--set", "data.max_length=-5"], r"data\.max_length: .*greater than"),
        ("negative eps", [str(good), "--set", "optim.eps=-1"], r"optim\.eps: .*greater than 0"),
        ("duplicate class names", [str(good), "--set", "data.class_names=[a,a]"], r"repeated: \['a'\]"),
        ("--name outside the output dir", [str(good), "--name", "../x"], r"run\.name: .*'\.\./x' is not a plain"),
        ("malformed config file", [str(good), "--config", str(d / "bad.yaml")], r"cannot parse config file .*bad\.yaml"),
        ("bad override", [str(good), "--set", "optim.lr"], r"'optim\.lr' is not of the form key=value"),
    ]


def test_finetune_bad_input_fails_before_ray_with_one_line(tmp_path, capsys, no_ray):
    out = tmp_path / "runs"
    for name, args, pattern in _finetune_cases(tmp_path):
        status = main(["finetune", *args, "--output", str(out)])
        line = _one_error_line(capsys.readouterr().err)
        assert status == 2, (name, line)
        assert re.search(pattern, line), (name, line)
    assert not list(out.glob("*/config.yaml")) and not (tmp_path / "x").exists()  # nothing written


def _exported(tmp_path: Path) -> Path:
    """A tiny exported model directory (as `raycad finetune` writes one)."""
    from raycad.config import FinetuneConfig
    from raycad.train.build import build_model
    from raycad.train.checkpoint import export_model

    cfg = FinetuneConfig().with_overrides({"model.overrides": {"d_model": 16, "n_layer": 1}})
    model = build_model(cfg, 2, ["neg", "pos"])
    return export_model(model, tmp_path / "model", meta={"class_names": ["neg", "pos"], "max_length": 32,
                                                          "config": cfg.to_dict()})


def test_predict_bad_input_one_line_naming_the_file(tmp_path, capsys, no_ray):
    model = _exported(tmp_path)
    broken_config = tmp_path / "broken_config"
    broken_weights = tmp_path / "broken_weights"
    for target in (broken_config, broken_weights):
        target.mkdir()
        for f in model.iterdir():
            (target / f.name).write_bytes(f.read_bytes())
    (broken_config / "config.json").write_text('{"d_model": 16,')
    weights = (broken_weights / "model.safetensors").read_bytes()
    (broken_weights / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    good = _csv(tmp_path / "in.csv", _binary(4))
    cases = [
        ("missing input", [str(model), str(tmp_path / "none.csv")], r"none\.csv"),
        ("empty csv", [str(model), str(_csv(tmp_path / "empty.csv", None))], r"empty\.csv"),
        ("not a model dir", [str(tmp_path), str(good)], rf"{tmp_path.name} is not an exported model"),
        ("malformed config.json", [str(broken_config), str(good)], r"broken_config/config\.json: not valid JSON"),
        ("truncated safetensors", [str(broken_weights), str(good)],
         r"broken_weights/model\.safetensors: cannot load the weights"),
    ]
    for name, args, pattern in cases:
        status = main(["predict", *args, "-o", str(tmp_path / "pred.csv")])
        line = _one_error_line(capsys.readouterr().err)
        assert status == 2, (name, line)
        assert re.search(pattern, line), (name, line)
    assert not (tmp_path / "pred.csv").exists()


@pytest.mark.slow
def test_bad_data_found_by_ray_is_one_line_and_no_model(ray_local, tmp_path, capsys):
    """Inputs only a pass over the data reveals: an error line (unwrapped from Ray's), exit 2, no model."""
    tiny = ["--set", "model.overrides={d_model: 16, n_layer: 1}", "--epochs", "1", "--set", "train.batch_size=8"]
    rows = _binary(40)
    cases = [
        ("stray label", _csv(tmp_path / "stray.csv", [*rows[:-1], (ACGT, 5)]),
         r"stray\.csv \[train\]: label ids \[0, 1, 5\] skip \[2, 3, 4\]"),
        ("single class", _csv(tmp_path / "single.csv", [(s, 0) for s, _ in rows]),
         r"single\.csv \[train\]: every training record has label '0'"),
        ("not DNA", _csv(tmp_path / "protein.csv", [("MKVLAAGIVQWERTY"[i % 9:] + "MKVLAAGIVQWERTY"[:i % 9] + "W" * i, i % 2)
                                                  for i in range(40)]),
         r"protein\.csv \[train\]: .* outside ACGTN .*is this DNA"),
        ("empty sequence (inside a Ray task)", _csv(tmp_path / "holes.csv", [*rows[:5], ("", 1), *rows[5:]]),
         r"holes\.csv.*empty sequence"),
    ]
    for name, path, pattern in cases:
        out = tmp_path / "runs"
        status = main(["finetune", str(path), "--output", str(out), "--name", path.stem, *tiny])
        line = _one_error_line(capsys.readouterr().err, ray_logs=True)
        assert status == 2, (name, line)
        assert re.search(pattern, line), (name, line)
        assert not (out / path.stem / "model").exists() and not (out / path.stem / "results.json").exists()


def test_label_checks_and_length_cap():
    from raycad.data import records

    with pytest.raises(records.RecordError, match=r"label ids \[0, 1, 5\] skip \[2, 3, 4\]"):
        records.check_label_counts({0: 50, 1: 49, 5: 1}, [str(i) for i in range(6)], "f.csv", declared=False)
    with pytest.raises(records.RecordError, match="every training record has label 'neg'"):
        records.check_label_counts({0: 10}, ["neg", "pos"], "f.csv", declared=True)
    records.check_label_counts({0: 10, 1: 3}, ["neg", "pos", "other"], "f.csv", declared=True)  # declared: ok
    lengths = [200] * 999 + [100_000]
    assert records.default_max_length(lengths, None) == (200, 1)  # one outlier does not set the length
    assert records.default_max_length([5000] * 10, records.trained_length("caduceus-ph-1k-d64-l2")) == (1024, 10)
    assert records.trained_length("kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16") == 131072
    assert records.trained_length("./my_model") is None
    assert records.trained_length("caduceus-ph-131k-d256-l16") == 131072


def test_results_table_shows_skipped_truncated_unk_counts():
    from rich.console import Console

    from raycad.train.report import results_table

    split = {"records": 90, "skipped": {"empty_sequence": 3}, "truncated": 7, "records_with_invalid": 2,
             "rna_records": 0}
    results = {"run": "r", "test_metrics": {"test_accuracy": 0.9}, "test_split": "test",
               "timings": {"total_s": 1.0}, "data": {"splits": {"train": split, "validation": {**split, "skipped": {}},
                                                                "test": split}}}
    console = Console(record=True, width=120)
    console.print(results_table(results))
    text = console.export_text()
    assert "skipped (train/val/test)" in text and "3 / 0 / 3" in text
    assert "truncated (train/val/test)" in text and "7 / 7 / 7" in text and "with [UNK]" in text
    assert "RNA" not in text  # zero counts are not shown
    json.dumps(results)
