"""Unit tests of raycad.tune that need no Ray cluster: search space, sampling, config export, reports."""

from __future__ import annotations

import csv
import json

import optuna
import pytest

from raycad.config import ConfigError, FinetuneConfig
from raycad.tune import SearchSpace, SweepConfig, apply, published_for
from raycad.tune.cli import parse_tasks
from raycad.tune.space import PARAM_NAMES, DefineByRun, Range
from raycad.tune.summary import markdown, write_summary
from raycad.tune.sweep import default_max_concurrent, resolve_tasks, trial_concurrency


def _ask(space: SearchSpace, seed: int, n: int) -> list[dict]:
    """The first ``n`` points Ray's OptunaSearch proposes with this seed (its real suggest path)."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=DefineByRun(space), metric="val_accuracy", mode="max", seed=seed)
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_fixed_seed_proposes_same_first_configurations():
    space = SearchSpace(method=["lora", "full"])
    first = _ask(space, seed=7, n=4)
    assert first == _ask(space, seed=7, n=4)
    assert first != _ask(space, seed=8, n=4)
    for params in first:  # every proposal is a complete, valid config
        assert set(params) <= set(PARAM_NAMES)
        apply(params, FinetuneConfig())


def test_conditional_parameters_only_when_used():
    space = SearchSpace(method=["lora", "full"], head_layers=[0, 1, 2])
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen_full = seen_two = seen_zero = False
    for _ in range(40):
        trial = study.ask()
        params = space.sample(trial)
        assert set(trial.params) == set(params)
        if params["method"] == "full":
            seen_full = True
            assert "lora_r" not in params and "lora_alpha_multiple" not in params
        else:
            assert params["lora_r"] in (4, 8, 16, 32)
        layers = params["head_layers"]
        assert all(f"head_hidden_{i}" in params for i in range(1, layers + 1))
        assert f"head_hidden_{layers + 1}" not in params
        assert ("head_dropout" in params) == (layers > 0)
        assert 1e-4 <= params["lr"] <= 1e-2
        seen_two |= layers == 2
        seen_zero |= layers == 0
        study.tell(trial, 0.5)
    assert seen_full and seen_two and seen_zero


def test_apply_maps_params_onto_the_config():
    base = FinetuneConfig.from_dict({"train": {"epochs": 2}, "scaling": {"num_workers": 2}})
    cfg = apply({"method": "lora", "lora_r": 16, "lora_alpha_multiple": 2.0, "lora_dropout": 0.1, "lr": 3e-3,
                 "weight_decay": 0.01, "pooling": "max", "head_layers": 2, "head_hidden_1": 64,
                 "head_hidden_2": 32, "head_dropout": 0.2, "batch_size": 32}, base)
    assert (cfg.peft.method, cfg.peft.r, cfg.peft.alpha, cfg.peft.dropout) == ("lora", 16, 32.0, 0.1)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (3e-3, 0.01)
    assert (cfg.head.pooling, cfg.head.hidden_sizes, cfg.head.dropout) == ("max", [64, 32], 0.2)
    assert cfg.train.batch_size == 32 and cfg.train.epochs == 2  # untouched fields keep the base values
    full = apply({"method": "full", "head_layers": 0, "lr": 1e-3}, base)
    assert full.peft.method == "none" and full.head.hidden_sizes == [] and full.head.dropout == 0.0
    with pytest.raises(ConfigError, match="unknown search parameters"):
        apply({"learning_rate": 1e-3}, base)
    with pytest.raises(ConfigError, match="head_hidden_2"):
        apply({"head_layers": 2, "head_hidden_1": 8}, base)
    with pytest.raises(ConfigError, match="batch_size"):
        apply({"batch_size": 33}, base)  # not divisible by 2 workers


def test_default_space_fits_the_model(tmp_path, caplog):
    from raycad.tune.sweep import run_sweep

    random_init = FinetuneConfig()  # caduceus-ph-1k-d96-l2, no pretrained weights
    space = SearchSpace().for_base(random_init)
    assert space.method == ["full"] and space.d_model == [96, 192] and space.n_layer == [2, 4]
    pretrained = FinetuneConfig.load(overrides=["model.pretrained=some/dir"])
    space_pt = SearchSpace().for_base(pretrained)
    assert space_pt.method == ["lora"] and space_pt.d_model is None and space_pt.n_layer is None
    with pytest.raises(ValueError, match="for_base"):
        SearchSpace().sample(None)
    with pytest.raises(ConfigError, match="shape"):
        SearchSpace(d_model=[32]).check_against(pretrained)
    # random init: every sampled point is full fine-tuning over the model sizes
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [space.sample(study.ask()) for _ in range(12)]
    assert {p["method"] for p in points} == {"full"} and {p["d_model"] for p in points} == {96, 192}
    cfg = apply(points[0], random_init)
    assert cfg.peft.method == "none" and cfg.model.overrides == {"d_model": points[0]["d_model"],
                                                                   "n_layer": points[0]["n_layer"]}
    # LoRA asked for on a random init: a clear warning before anything runs (the sweep then fails on the task)
    sweep = SweepConfig(space=SearchSpace(method=["lora"]), tasks=["no_such_task"], output_dir=str(tmp_path))
    with pytest.raises(ConfigError), caplog.at_level("WARNING", logger="raycad"):
        run_sweep(sweep, show=False)
    assert "LoRA without pretrained weights" in caplog.text


def test_apply_maps_model_size_epochs_schedule_and_rc():
    base = FinetuneConfig.load(overrides=["model.overrides={n_layer: 3}"])
    cfg = apply({"preset": "caduceus-ps-1k-d64-l2", "d_model": 96, "epochs": 9, "schedule": "constant",
                 "rc_augment": 0.0}, base)
    assert cfg.model.preset == "caduceus-ps-1k-d64-l2" and cfg.model.overrides == {"n_layer": 3, "d_model": 96}
    assert (cfg.train.epochs, cfg.schedule.name, cfg.data.rc_augment) == (9, "constant", 0.0)
    assert SearchSpace(epochs=[2, 6]).max_epochs(base) == 6 and SearchSpace().max_epochs(base) == base.train.epochs


def test_best_config_file_roundtrips_through_finetune_loader(tmp_path):
    cfg = apply({"method": "lora", "lora_r": 8, "lora_alpha_multiple": 1.0, "lr": 1e-3, "head_layers": 1,
                 "head_hidden_1": 16, "head_dropout": 0.1}, FinetuneConfig())
    path = cfg.save(tmp_path / "best.yaml")
    assert FinetuneConfig.from_file(path) == cfg


def test_space_overrides_from_yaml_and_validation(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("space:\n  lora_r: [8]\n  lr: {low: 0.001, high: 0.003, log: true}\n"
                    "  batch_size: [16]\nnum_samples: 2\ntasks: [demo]\n")
    cfg = SweepConfig.load(path, overrides=["space.pooling=[mean]", "base.train.epochs=2"])
    assert cfg.space.lora_r == [8] and cfg.space.pooling == ["mean"]
    assert cfg.space.lr == Range(low=0.001, high=0.003, log=True) and cfg.base.train.epochs == 2
    with pytest.raises(ConfigError, match="no candidate values"):
        SweepConfig.load(path, overrides=["space.pooling=[]"])
    with pytest.raises(ConfigError, match="log range"):
        SweepConfig.load(path, overrides=["space.lr.low=0"])
    with pytest.raises(ConfigError):
        SweepConfig.load(path, overrides=["space.pooling=[median]"])
    with pytest.raises(ConfigError, match="not divisible"):
        resolve_tasks(SweepConfig.load(path, overrides=["space.batch_size=[15]", "base.scaling.num_workers=2"]))


def test_resolve_tasks_names_aliases_demo_and_user_data():
    cfg = SweepConfig.from_dict({"tasks": ["demo", "nontata", {"name": "mine", "data": {"train": "x.csv"}}],
                                 "trial_workers": 1, "gpu": False})
    runs = resolve_tasks(cfg)
    assert [r.name for r in runs] == ["demo", "human_nontata_promoters", "mine"]
    assert runs[0].cfg.data.task is None and runs[0].cfg.data.train is None
    assert runs[1].cfg.data.task == "human_nontata_promoters" and runs[1].benchmark == "human_nontata_promoters"
    assert runs[2].cfg.data.train == "x.csv" and runs[2].benchmark is None
    assert all(r.cfg.scaling.num_workers == 1 for r in runs)
    assert len(resolve_tasks(SweepConfig(tasks=["all"]))) >= 8
    with pytest.raises(ConfigError):
        resolve_tasks(SweepConfig(tasks=["no_such_task"]))
    with pytest.raises(ConfigError, match="unique"):
        SweepConfig.from_dict({"tasks": ["demo", "demo"]})
    assert parse_tasks("demo, nontata,mine=s3://b/k.csv") == [
        "demo", "nontata", {"name": "mine", "data": {"train": "s3://b/k.csv"}}]


def test_default_concurrency_leaves_a_cpu_for_ray_data():
    two_workers = FinetuneConfig.from_dict({"scaling": {"num_workers": 2}})
    assert default_max_concurrent(two_workers, 0.01, {"CPU": 2.0}) == 1
    assert default_max_concurrent(two_workers, 0.01, {"CPU": 16.0}) == 7  # 2 x 1 CPU + 0.01 each, 1 CPU kept
    gpu = FinetuneConfig.from_dict({"scaling": {"num_workers": 1, "use_gpu": True}})
    assert default_max_concurrent(gpu, 0.01, {"CPU": 16.0, "GPU": 2.0}) == 2
    with pytest.raises(ConfigError, match="GPUs"):
        default_max_concurrent(gpu, 0.01, {"CPU": 16.0})


def test_asking_for_more_trials_than_fit_is_warned(caplog):
    one_worker = SweepConfig.from_dict({"base": {"scaling": {"num_workers": 1}}, "max_concurrent": 2})
    resources = {"CPU": 2.0}
    with caplog.at_level("WARNING", logger="raycad.tune"):
        assert trial_concurrency(one_worker, one_worker.base, resources) == 2  # honoured: a cluster may grow
    assert "only 1 trial(s) fit" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="raycad.tune"):
        assert trial_concurrency(one_worker.model_copy(update={"max_concurrent": None}), one_worker.base,
                                 resources) == 1
        assert trial_concurrency(one_worker, one_worker.base, {"CPU": 8.0}) == 2
    assert "fit" not in caplog.text


def test_published_table_is_in_the_package():
    assert published_for("human_nontata_promoters") == {"CNN": 0.861, "HyenaDNA": 0.944, "Caduceus-Ph": 0.946,
                                                        "Caduceus-PS": 0.945}
    assert published_for("enhancers_cohn")["Caduceus-PS"] == 0.745  # aliases resolve
    assert published_for("drosophila_enhancers_stark") == {} and published_for(None) == {}


def _row(task: str, **kw) -> dict:
    row = {"task": task, "benchmark": None, "best_config": "lora r8", "best_trial": "t1", "best_epoch": 2,
           "best_params": {"lora_r": 8}, "val_accuracy": 0.8, "val_f1": 0.79, "val_mcc": 0.6, "val_auroc": 0.88,
           "test_split": "test", "test_accuracy": 0.81, "test_f1": 0.8, "test_mcc": 0.61, "test_auroc": 0.9,
           "trials": 3, "trials_completed": 1, "trials_stopped_early": 2, "trials_errored": 0, "trial_starts": 3,
           "epochs_run": 5, "epochs_budget": 9, "wall_time_s": 12.5, "best_config_file": "b.yaml", "published": {}}
    row.update(kw)
    return row


def test_summary_files(tmp_path):
    baseline = {"baseline_config": "6-mer LR (C=3)", "baseline_val_accuracy": 0.87, "baseline_test_accuracy": 0.853,
                "baseline_test_f1": 0.852, "baseline_test_mcc": 0.714, "baseline_test_auroc": 0.924}
    rows = [_row("demo", **baseline), _row("human_nontata_promoters", published=published_for("nontata"))]
    paths = write_summary(tmp_path, rows)
    with open(paths["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert [r["task"] for r in table] == ["demo", "human_nontata_promoters"]
    assert table[1]["published_Caduceus-PS"] == "0.945" and table[0]["published_Caduceus-PS"] == ""
    assert table[0]["test_accuracy"] == "0.81" and table[0]["trials_stopped_early"] == "2"
    md = paths["markdown"].read_text()
    assert "| human_nontata_promoters | 0.810 | – | 0.861 | 0.944 | 0.946 | 0.945 |" in md
    assert "| demo | 0.810 | 0.853 | – |" in md and table[0]["baseline_test_mcc"] == "0.714"
    assert "| | 6-mer LR (C=3) | 0.853 | 0.852 | 0.714 | 0.924 |" in md  # beside raycad's test metrics
    assert "5 / 9 | 44% |" in md  # ASHA saved 4 of 9 budgeted epochs
    assert paths["plot"].stat().st_size > 5000 and paths["plot"].read_bytes()[:4] == b"\x89PNG"
    json.dumps(rows)  # rows stay JSON-serializable (written per task for resume)
    assert "–" in markdown([_row("x", test_accuracy=None)])


def test_cross_validated_trials_score_on_all_folds_and_report_mean_and_spread():
    from types import SimpleNamespace

    import pandas as pd

    from raycad.data.tasks import PROTOCOL
    from raycad.tune.sweep import _trial_record

    # a CV trial reports a running mean after each fold; only the last report (all folds) scores it
    reports = pd.DataFrame([{"fold": 1, "val_accuracy": 0.95},
                            {"fold": 2, "val_accuracy": 0.70, "test_accuracy": 0.72, "test_accuracy_spread": 0.04}])
    result = SimpleNamespace(metrics_dataframe=reports, metrics={"trial_id": "t1"}, config={"lr": 1e-3}, error=None,
                             path="/x/t1")
    record = _trial_record(result, "val_accuracy", "max")
    assert record["epochs"] == 2 and [r["val_accuracy"] for r in record["ranked"]] == [0.70]
    assert record["ranked"][0]["test_accuracy_spread"] == 0.04

    row = _row("human_nontata_promoters", published=published_for("nontata"), cv_folds=5, test_accuracy=0.851,
               test_accuracy_spread=0.012, protocol="5-fold cross-validation of the training split (seed 0)")
    md = markdown([row])
    assert "| human_nontata_promoters | 0.851 ± 0.012 | – | 0.861 | 0.944 | 0.946 | 0.945 |" in md
    assert "raycad: 5-fold cross-validation of the training split (seed 0)." in md and PROTOCOL in md
