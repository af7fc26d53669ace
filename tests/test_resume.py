"""Resuming a run by name never mixes two configs: a changed config is refused before Ray starts (listing the
differences) unless --continue-stored or --fresh says what to do; other data (classes, length) is refused too."""

from __future__ import annotations

import re

import pytest
import yaml

from raycad import runtime
from raycad.cli import main
from raycad.config import ConfigError, FinetuneConfig, PretrainConfig
from raycad.train.trainer import check_resumed_data, resolve_resume


@pytest.fixture
def stored_run(tmp_path):
    """A run directory as `raycad finetune --name r1` leaves it (config.yaml written when the run started)."""
    cfg = FinetuneConfig().with_overrides({"run.name": "r1", "run.output_dir": str(tmp_path)})
    cfg.save(tmp_path / "r1" / "config.yaml")
    return cfg


@pytest.fixture
def no_ray(monkeypatch):
    def tripwire(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(runtime, "init_ray", tripwire)


@pytest.mark.parametrize(("overrides", "listed"), [
    (["optim.lr=0.001", "optim.weight_decay=0.1"], ["optim.lr: 0.0017 -> 0.001", "optim.weight_decay: 0.0 -> 0.1"]),
    (["head.hidden_sizes=[64]"], ["head.hidden_sizes: [] -> [64]"]),
    (["data.class_names=[a,b,c]"], ["data.class_names: None -> ['a', 'b', 'c']"]),
    (["train.epochs=8"], ["train.epochs: 10 -> 8"]),
])
def test_changed_config_is_refused_before_ray_and_config_yaml_kept(stored_run, tmp_path, capsys, no_ray,
                                                                   overrides, listed):
    before = (tmp_path / "r1" / "config.yaml").read_text()
    args = ["finetune", "--name", "r1", "--output", str(tmp_path)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("raycad: config error: run 'r1'") and "\n" not in line
    for item in listed:
        assert item in line, line
    assert "--continue-stored" in line and "--fresh" in line
    assert (tmp_path / "r1" / "config.yaml").read_text() == before


def test_unchanged_or_scaling_only_resumes_and_stored_or_fresh_are_explicit(stored_run, tmp_path):
    assert resolve_resume(stored_run) == stored_run
    more_workers = stored_run.with_overrides({"scaling.num_workers": 1})  # how it runs, not what it trains
    assert resolve_resume(more_workers) == more_workers
    changed = stored_run.with_overrides({"optim.lr": 1e-3, "scaling.num_workers": 1})
    with pytest.raises(ConfigError, match=re.escape("optim.lr: 0.0017 -> 0.001")):
        resolve_resume(changed)
    kept = resolve_resume(changed, "stored")
    assert kept.optim.lr == 1.7e-3 and kept.scaling.num_workers == 1
    fresh = resolve_resume(changed, "fresh")
    assert fresh == changed and not (tmp_path / "r1").exists()
    aside = list(tmp_path.glob("r1.replaced-*"))
    assert len(aside) == 1 and yaml.safe_load((aside[0] / "config.yaml").read_text())["optim"]["lr"] == 1.7e-3


def test_resume_on_other_data_is_refused(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    check_resumed_data(run, ["neg", "pos"], 251)  # first attempt: recorded
    check_resumed_data(run, ["neg", "pos"], 251)  # same data: fine
    with pytest.raises(ConfigError, match=r"class_names: \['neg', 'pos'\] -> \['0', '1', '2', '3', '4', '5'\]"):
        check_resumed_data(run, [str(i) for i in range(6)], 251)


def test_pretrain_resume_uses_the_same_rule(tmp_path, capsys, no_ray):
    """`raycad pretrain --name` refuses a changed config before Ray starts; --continue-stored keeps the stored
    pre-training config (read back as a `PretrainConfig`), --fresh moves the old run aside."""
    stored = PretrainConfig().with_overrides({"run.name": "p1", "run.output_dir": str(tmp_path)})
    stored.save(tmp_path / "p1" / "config.yaml")
    args = ["pretrain", "--name", "p1", "--output", str(tmp_path), "--max-steps", "50", "--set", "mlm.probability=0.2"]
    assert main(args) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("raycad: config error: run 'p1'") and "--continue-stored" in line
    assert "mlm.probability: 0.15 -> 0.2" in line and "train.max_steps: None -> 50" in line
    changed = stored.with_overrides({"mlm.probability": 0.2, "scaling.num_workers": 1})
    kept = resolve_resume(changed, "stored")
    assert isinstance(kept, PretrainConfig) and kept.mlm.probability == 0.15 and kept.scaling.num_workers == 1
    assert resolve_resume(changed, "fresh") == changed and not (tmp_path / "p1").exists()
