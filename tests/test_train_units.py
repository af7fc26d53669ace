"""Unit tests of raycad.train pieces that need no Ray cluster: metrics, LR schedule, LoRA wiring, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from raycad.config import FinetuneConfig, PeftSection
from raycad.train.checkpoint import load_training_state, read_state, save_training_checkpoint
from raycad.train.loop import build_optimizer, build_scheduler, is_better, lr_factor, steps_per_epoch
from raycad.train.lora import apply_lora, count_parameters, lora_layers, merge_lora
from raycad.train.metrics import EvalAccumulator, metrics_from_confusion


# ---- metrics -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [2, 3])
def test_metrics_match_sklearn(num_classes: int) -> None:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    gen = torch.Generator().manual_seed(num_classes)
    labels = torch.randint(0, num_classes, (500,), generator=gen)
    logits = torch.randn(500, num_classes, generator=gen) + 1.5 * nn.functional.one_hot(labels, num_classes)
    # two "workers" accumulate halves; summing their states equals one pass over everything
    a, b, whole = (EvalAccumulator(num_classes) for _ in range(3))
    a.update(logits[:200], labels[:200])
    b.update(logits[200:], labels[200:])
    whole.update(logits, labels)
    a.merge(b)
    got, ref = a.compute(prefix="val_"), whole.compute(prefix="val_")
    assert got.pop("val_loss") == pytest.approx(ref.pop("val_loss"), rel=1e-6)  # float32 partial sums
    assert got == ref
    got["val_loss"] = float(a.loss_sum) / 500

    y, p = labels.numpy(), logits.softmax(1).numpy()
    pred = p.argmax(1)
    assert got["val_n"] == 500
    assert got["val_accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert got["val_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["val_mcc"] == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)
    auroc = roc_auc_score(y, p[:, 1]) if num_classes == 2 else roc_auc_score(y, p, multi_class="ovr")
    assert got["val_auroc"] == pytest.approx(auroc, abs=1e-9)
    assert got["val_loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, labels)), rel=1e-6)
    assert got["val_support"] == np.bincount(y, minlength=num_classes).tolist()
    assert got["val_predicted"] == np.bincount(pred, minlength=num_classes).tolist()


def test_auroc_exact_for_a_miscalibrated_classifier() -> None:
    """Well ranked, but every probability > 0.99 (a binned AUROC puts all records in the last bins)."""
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (2000,), generator=gen)
    margin = 6.0 + labels * 1.5 + torch.rand(2000, generator=gen) * 3  # logit(class 1) - logit(class 0)
    logits = torch.stack([torch.zeros(2000), margin], dim=1)
    logits[:10] = logits[10:20]  # some exact ties
    acc = EvalAccumulator(2)
    for part in range(4):
        acc.update(logits[part::4], labels[part::4])
    probs = logits.double().softmax(1)[:, 1]
    assert probs.min() > 0.99
    ordered = torch.cat([labels[part::4] for part in range(4)])
    ordered_probs = torch.cat([probs[part::4] for part in range(4)])
    assert acc.compute()["auroc"] == pytest.approx(roc_auc_score(ordered.numpy(), ordered_probs.numpy()), abs=1e-9)


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One process of the 2-worker test: its share of the records, then `all_reduce` over gloo."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, labels = _worker_records()
        own = slice(0, 700) if rank == 0 else slice(700, None)  # unequal shares: 700 and 333 records
        acc = EvalAccumulator(3)
        acc.update(logits[own], labels[own])
        metrics = acc.all_reduce(chunk_rows=128).compute()
        torch.save({"metrics": metrics, "labels": acc.labels, "probs": acc.probs}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _worker_records() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 3, (1033,), generator=gen)
    logits = 4 + torch.randn(1033, 3, generator=gen) + 0.8 * nn.functional.one_hot(labels, 3)
    return logits, labels


def test_two_workers_metrics_equal_sklearn_on_all_records(tmp_path) -> None:
    import torch.multiprocessing as mp
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    logits, labels = _worker_records()
    y, p = labels.numpy(), logits.double().softmax(1).numpy()
    pred = p.argmax(1)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["metrics"] == results[1]["metrics"]  # every rank sees the same numbers
    assert torch.equal(results[0]["labels"], labels)  # all records, in rank order
    got = results[0]["metrics"]
    assert got["n"] == 1033
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), abs=1e-9)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["mcc"] == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)


def test_metrics_degenerate_cases() -> None:
    # all predictions one class: MCC 0 (not NaN); AUROC NaN when only one class is present
    m = metrics_from_confusion(torch.tensor([[5.0, 0.0], [3.0, 0.0]]))
    assert m["accuracy"] == pytest.approx(5 / 8) and m["mcc"] == 0.0
    acc = EvalAccumulator(2)
    acc.update(torch.tensor([[2.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 0]))
    assert math.isnan(acc.compute()["auroc"])
    with pytest.raises(ValueError, match="labels outside"):
        acc.update(torch.zeros(1, 2), torch.tensor([2]))


# ---- schedule ------------------------------------------------------------------------------------------------
def test_warmup_cosine_schedule() -> None:
    total, warmup = 100, 10
    factors = [lr_factor(s, total, warmup, 0.1) for s in range(total + 5)]
    assert factors[0] == pytest.approx(0.1) and factors[warmup - 1] == pytest.approx(1.0)
    assert factors[warmup] == pytest.approx(1.0)
    assert factors[total] == pytest.approx(0.1) and factors[-1] == pytest.approx(0.1)  # clamped, never below
    assert all(x >= y for x, y in zip(factors[warmup:], factors[warmup + 1:]))  # monotone decay
    assert lr_factor(50, total, 0, 0.0, "constant") == 1.0
    assert steps_per_epoch(1000, 2, 16, 1) == 32 and steps_per_epoch(1000, 2, 16, 4) == 8
    assert is_better(0.5, None, "max") and not is_better(0.4, 0.5, "max") and is_better(0.4, 0.5, "min")


def test_optimizer_groups_and_scheduler() -> None:
    cfg = FinetuneConfig().with_overrides({"optim.lr": 1e-2, "schedule.warmup_ratio": 0.5})
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, cfg)
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, cfg.optim.weight_decay]
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
    sched = build_scheduler(opt, cfg, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2) and lrs[3] < lrs[2]


# ---- LoRA on a module with the Caduceus layout (tied in_proj/out_proj between directions) -------------------------
class _Mamba(nn.Module):
    def __init__(self, d: int, in_proj: nn.Module | None = None, out_proj: nn.Module | None = None) -> None:
        super().__init__()
        self.in_proj = in_proj or nn.Linear(d, 2 * d, bias=False)
        self.x_proj = nn.Linear(2 * d, 4, bias=False)
        self.dt_proj = nn.Linear(4, 2 * d)
        self.out_proj = out_proj or nn.Linear(2 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_proj(x)
        return self.out_proj(h + self.dt_proj(self.x_proj(h)))


class _BiLayer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.mamba_fwd = _Mamba(d)
        self.mamba_rev = _Mamba(d, self.mamba_fwd.in_proj, self.mamba_fwd.out_proj)  # tied, as in Caduceus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mamba_fwd(x) + self.mamba_rev(x.flip(1)).flip(1)


class _ToyCaduceus(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.caduceus = nn.ModuleDict({"emb": nn.Embedding(12, d), "layers": nn.ModuleList([_BiLayer(d) for _ in range(2)])})
        self.score = nn.Linear(d, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.caduceus["emb"](input_ids)
        for layer in self.caduceus["layers"]:
            x = x + layer(x)
        return self.score(x.mean(1))


def test_lora_trains_only_adapters_and_head_and_reties_reverse_direction() -> None:
    torch.manual_seed(0)
    model = _ToyCaduceus()
    ids = torch.randint(7, 11, (3, 10))
    before = model(ids)
    lora = apply_lora(model, PeftSection(method="lora", r=2, alpha=4))
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert all("lora_" in n or ".score." in n for n in trainable)
    assert any(".score." in n for n in trainable)
    # adapters: fwd in/x/dt/out + rev x/dt (in/out shared with fwd) = 6 per layer, A and B each
    assert sum("lora_A" in n for n in trainable) == 2 * 6
    n_trainable, n_total = count_parameters(lora)
    assert n_trainable == sum(p.numel() for n, p in lora.named_parameters() if n in trainable)
    assert n_total == n_trainable + sum(p.numel() for p in model.caduceus.parameters() if not p.requires_grad)
    for layer in lora.base_model.model.caduceus["layers"]:
        assert layer.mamba_rev.in_proj is layer.mamba_fwd.in_proj  # the same LoRA wrapper, one adapter
        assert layer.mamba_rev.out_proj is layer.mamba_fwd.out_proj
        assert "lora_A" in dict(layer.mamba_rev.in_proj.named_modules())
    # peft wrappers at every reference: fwd + rev in/x/dt/out (the tied in/out listed under both names)
    assert len(lora_layers(lora)) == 2 * 8
    torch.testing.assert_close(lora(ids), before)  # B = 0 at init: unchanged function

    # the reverse direction really uses the shared adapter: its in_proj output depends on lora_B
    layer = lora.base_model.model.caduceus["layers"][0]
    x = torch.randn(2, 5, 8)
    plain = layer.mamba_rev(x)
    with torch.no_grad():
        layer.mamba_fwd.in_proj.lora_B["default"].weight.normal_()
    assert not torch.allclose(layer.mamba_rev(x), plain)

    # merging folds the one adapter into the one shared weight; ties and outputs survive
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            p.data.normal_(std=0.1)
    expected = lora(ids)
    merged = merge_lora(lora)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    for layer in merged.caduceus["layers"]:
        assert layer.mamba_rev.in_proj is layer.mamba_fwd.in_proj
        assert isinstance(layer.mamba_rev.in_proj, nn.Linear)
    torch.testing.assert_close(merged(ids), expected, atol=1e-5, rtol=1e-5)


# ---- checkpoints -----------------------------------------------------------------------------------------------
def test_checkpoint_roundtrip_restores_training_state(tmp_path) -> None:
    cfg = FinetuneConfig()

    def make():
        torch.manual_seed(1)
        m = apply_lora(_ToyCaduceus(), PeftSection(method="lora", r=2))
        o = build_optimizer(m, cfg)
        return m, o, build_scheduler(o, cfg, 20)

    model, opt, sched = make()
    ids, labels = torch.randint(7, 11, (4, 10)), torch.tensor([0, 1, 0, 1])
    for _ in range(3):
        nn.functional.cross_entropy(model(ids), labels).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    save_training_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched,
                             state={"epoch": 3, "history": [{"epoch": 1}]})
    assert read_state(tmp_path)["epoch"] == 3

    model2, opt2, sched2 = make()
    state = load_training_state(tmp_path, model=model2, optimizer=opt2, scheduler=sched2)
    assert state["history"] == [{"epoch": 1}]
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), model2.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert sched2.get_last_lr() == sched.get_last_lr()
    # one more identical step on both: identical results (optimizer moments were restored)
    for m, o in ((model, opt), (model2, opt2)):
        nn.functional.cross_entropy(m(ids), labels).backward()
        o.step()
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p1, p2)

    # a different frozen base is detected, not silently used
    torch.manual_seed(99)
    other = apply_lora(_ToyCaduceus(), PeftSection(method="lora", r=2))
    o3 = build_optimizer(other, cfg)
    with pytest.raises(ValueError, match="frozen base weights differ"):
        load_training_state(tmp_path, model=other, optimizer=o3, scheduler=build_scheduler(o3, cfg, 20))


class _WritesMarker:
    """A pickle payload that creates a file when unpickled (what a tampered checkpoint could do)."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_checkpoint_loads_tensors_only_and_refuses_code(tmp_path) -> None:
    cfg = FinetuneConfig()
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 10)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    save_training_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                             state={"epoch": 1})
    # optimizer, LambdaLR and GradScaler states all load with weights_only=True
    opt2 = build_optimizer(model, cfg)
    sched2, scaler2 = build_scheduler(opt2, cfg, 10), torch.amp.GradScaler("cpu", init_scale=1.0)
    load_training_state(tmp_path, model=model, optimizer=opt2, scheduler=sched2, scaler=scaler2)
    assert scaler2.get_scale() == 512.0 and sched2.last_epoch == 1 and opt2.state_dict()["state"]

    marker = tmp_path / "pwned"
    torch.save({"optimizer": _WritesMarker(marker), "scheduler": {}, "scaler": None}, tmp_path / "optimizer.pt")
    with pytest.raises(ValueError, match=r"optimizer.pt: refusing to load it.*could run code"):
        load_training_state(tmp_path, model=model, optimizer=opt2, scheduler=sched2)
    assert not marker.exists()


def test_package_never_unpickles_untrusted_files() -> None:
    import re
    from pathlib import Path

    import raycad

    offenders = []
    for path in Path(raycad.__file__).parent.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"torch\.load\(", code) and "weights_only=True" not in code:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
            if re.search(r"pickle\.loads?\(|cloudpickle\.load|joblib\.load|np\.load\(.*allow_pickle=True", code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


@pytest.mark.parametrize("targets", [["conv1d"], ["in_proj", "A_log"], ["score"]])
def test_lora_refuses_modules_the_mixer_does_not_call(targets) -> None:
    from raycad.config import ConfigError

    with pytest.raises(ConfigError, match=r"not modules the Mamba mixer calls.*allowed: in_proj, x_proj, dt_proj, "
                                          r"out_proj"):
        FinetuneConfig().with_overrides({"peft.method": "lora", "peft.target_modules": targets})
    with pytest.raises(ValueError, match="allowed: in_proj"):
        PeftSection(method="lora", target_modules=targets)


def test_lora_on_caduceus_every_adapter_gets_gradient_and_merges() -> None:
    from raycad.train.build import build_model

    cfg = FinetuneConfig().with_overrides({"model.preset": "caduceus-ph-1k-d128-l4", "peft.method": "lora",
                                           "model.overrides": {"d_model": 32, "n_layer": 2}})
    model = build_model(cfg, 2)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("base_model.model.score") for n in trainable)
    n_trainable, n_total = count_parameters(model)
    base = build_model(cfg.with_overrides({"peft.method": "none"}), 2)
    r, targets = cfg.peft.r, tuple(cfg.peft.target_modules)
    adapters = sum(r * (m.in_features + m.out_features) for name, m in base.caduceus.named_modules()
                   if name.endswith(targets))  # named_modules() lists each tied module once: one adapter
    head = sum(p.numel() for n, p in base.named_parameters() if not n.startswith("caduceus."))
    assert n_trainable == sum(p.numel() for p in trainable.values()) == adapters + head
    assert n_total == count_parameters(base)[1] + adapters
    for layer in model.base_model.model.caduceus.backbone.layers:
        mixer = layer.mixer
        assert mixer.mamba_rev.in_proj is mixer.mamba_fwd.in_proj and hasattr(mixer.mamba_rev.in_proj, "lora_A")
        assert mixer.mamba_rev.out_proj is mixer.mamba_fwd.out_proj and hasattr(mixer.mamba_rev.out_proj, "lora_A")
    for p in trainable.values():  # make every adapter matter, then check that each one gets a gradient
        if p.abs().sum() == 0:
            p.data.normal_(std=0.05)
    ids = torch.randint(7, 12, (3, 50))
    out = model(input_ids=ids, labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    no_grad = [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, f"adapters bypassed by the model: {no_grad}"
    merged = merge_lora(model)
    assert not any("lora" in n for n in merged.state_dict())
    torch.testing.assert_close(merged(input_ids=ids).logits, out.logits, atol=1e-5, rtol=1e-4)


def test_worker_steps_alone_train_validate_and_stop_early() -> None:
    """`make_worker` + `train_epoch` / `validate` / `end_epoch` on a tiny model, without Ray: the loss falls,
    every optimizer step is counted (an incomplete accumulation included), metrics cover every record, and
    early stopping follows ``patience``."""
    from raycad.model.scan import set_scan_impl
    from raycad.train.build import build_model
    from raycad.train.loop import make_worker

    cfg = FinetuneConfig().with_overrides({"model.preset": "caduceus-ph-1k-d128-l4", "train.batch_size": 16,
                                           "train.grad_accum": 3, "train.epochs": 4, "train.patience": 1,
                                           "optim.lr": 3e-3, "model.overrides": {"d_model": 32, "n_layer": 2},
                                           "model.scan_impl": "chunked"})  # no JIT compile in a unit test
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    ids = torch.where(torch.rand(64, 40, generator=gen) < 0.8, 7 + labels[:, None], 9)  # mostly A (0) / C (1)
    batches = [{"input_ids": ids[i:i + 16], "labels": labels[i:i + 16]} for i in range(0, 64, 16)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray worker (setup_worker); threads only contend on a tiny model
    try:
        w = make_worker(cfg, build_model(cfg, 2), num_classes=2, num_rows=64, device=torch.device("cpu"))
        _train_validate_stop(w, batches)
    finally:
        set_scan_impl("auto")  # build_model set it for this process
        torch.set_num_threads(threads)


def test_worker_epoch_plan_for_split_and_bucketed_data() -> None:
    """Split data: each of 2 workers gets num_rows // 2 records in per-worker batches. Length-bucketed data: every
    worker reads all ``num_rows`` global batches (its slice of each), so the epoch has one step per row."""
    from raycad.train.build import build_model
    from raycad.train.loop import make_worker

    cfg = FinetuneConfig().with_overrides({"model.preset": "caduceus-ph-1k-d128-l4", "train.batch_size": 16,
                                           "train.epochs": 3, "model.overrides": {"d_model": 32, "n_layer": 1},
                                           "data.max_length": 64})
    model, cpu = build_model(cfg, 2), torch.device("cpu")
    split = make_worker(cfg, model, num_classes=2, num_rows=100, device=cpu, rank=1, world=2)
    assert (split.rows_per_batch, split.batches_per_epoch) == (8, 7)  # 50 records per worker in batches of 8
    bucketed = make_worker(cfg, model, num_classes=2, num_rows=7, device=cpu, rank=1, world=2, bucketed=True)
    assert (bucketed.rows_per_batch, bucketed.batches_per_epoch) == (1, 7)
    # the LR schedule spans every step of every epoch: 7 per epoch in both cases, 21 in all
    floor = cfg.optim.lr * cfg.schedule.min_lr_ratio
    for w in (split, bucketed):
        for _ in range(20):
            w.scheduler.step()
        assert w.scheduler.get_last_lr()[0] > floor * 1.001
        w.scheduler.step()
        assert w.scheduler.get_last_lr()[0] == pytest.approx(floor)


def _train_validate_stop(w, batches) -> None:
    from raycad.train.loop import end_epoch, train_epoch, validate

    assert w.batches_per_epoch == 4 and w.rows_per_batch == 16

    first = train_epoch(w, batches)
    assert first["train_samples"] == 64 and w.progress.step == 2  # 3 micro-batches + the remaining 1
    before = validate(w, batches[:2])
    assert before["val_n"] == 32 and set(before["val_per_class"]) == {"support", "predicted", "true_positives"}
    for _ in range(3):
        last = train_epoch(w, batches)
    assert last["train_loss"] < first["train_loss"] and w.progress.step == 8
    after = validate(w, batches[:2])
    assert after["val_loss"] < before["val_loss"] and after["val_accuracy"] == 1.0

    w.progress.epoch = 0
    one = end_epoch(w, first, {**before, "val_accuracy": 0.9}, 1.0)
    assert (one["epoch"], w.progress.best, w.progress.bad_epochs, w.progress.stopped_early) == (1, 0.9, 0, False)
    end_epoch(w, first, {**before, "val_accuracy": 0.8}, 1.0)  # no better: patience 1 is used up
    assert (w.progress.epoch, w.progress.best_epoch, w.progress.stopped_early) == (2, 1, True)
    assert [h["epoch"] for h in w.progress.history] == [1, 2]


def test_weight_average_follows_steps_swaps_in_and_out_and_checkpoints(tmp_path) -> None:
    """`WeightAverage`: the ramped decay's closed form; `applied` restores the model's own weights even after
    an error; a checkpoint round-trip restores the average, and an averaging run refuses a checkpoint without
    one."""
    from raycad.train.ema import WeightAverage

    model = nn.Linear(3, 2)
    average, expected = WeightAverage(model, 0.5), model.weight.detach().clone()
    for n in range(4):
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update(model)
        decay = min(0.5, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * model.weight.detach()
    torch.testing.assert_close(average.weights["weight"], expected)
    own = model.weight.detach().clone()
    with pytest.raises(RuntimeError, match="inside"), average.applied(model):
        torch.testing.assert_close(model.weight.detach(), expected)
        raise RuntimeError("inside")
    assert torch.equal(model.weight, own)

    cfg = FinetuneConfig()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 10)
    save_training_checkpoint(tmp_path / "avg", model=model, optimizer=opt, scheduler=sched, state={}, average=average)
    restored = WeightAverage(model, 0.5)
    load_training_state(tmp_path / "avg", model=model, optimizer=opt, scheduler=sched, average=restored)
    assert restored.updates == 4 and torch.equal(restored.weights["weight"], average.weights["weight"])
    save_training_checkpoint(tmp_path / "plain", model=model, optimizer=opt, scheduler=sched, state={})
    with pytest.raises(ValueError, match="without train.weight_average"):
        load_training_state(tmp_path / "plain", model=model, optimizer=opt, scheduler=sched, average=restored)


def test_worker_validates_with_the_weight_average() -> None:
    """With ``train.weight_average`` every optimizer step updates the average, and `validate` scores the
    averaged weights, not the trained ones."""
    from raycad.model.scan import set_scan_impl
    from raycad.train.build import build_model
    from raycad.train.loop import evaluate_batches, make_worker, train_epoch, validate

    cfg = FinetuneConfig().with_overrides({"model.overrides": {"d_model": 16, "n_layer": 1}, "train.batch_size": 8,
                                           "train.weight_average": 0.9, "model.scan_impl": "chunked"})
    ids = torch.randint(7, 11, (32, 24), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids[i:i + 8], "labels": torch.arange(8) % 2} for i in range(0, 32, 8)]
    try:
        w = make_worker(cfg, build_model(cfg, 2), num_classes=2, num_rows=32, device=torch.device("cpu"))
        train_epoch(w, batches)
        assert w.progress.step == 4 and w.average.updates == 4
        got = validate(w, batches)
        trained = evaluate_batches(w.model, batches, 2, w.device).all_reduce().compute(prefix="val_")
        with w.average.applied(w.model):
            averaged = evaluate_batches(w.model, batches, 2, w.device).all_reduce().compute(prefix="val_")
        assert got["val_loss"] == pytest.approx(averaged["val_loss"], rel=1e-6)
        assert got["val_loss"] != pytest.approx(trained["val_loss"], rel=1e-5)
    finally:
        set_scan_impl("auto")


def test_cpu_evaluation_runs_batches_in_cache_sized_calls(monkeypatch) -> None:
    """On CPU `evaluate_batches` cuts each batch into calls of at most `cpu_tokens_per_call` tokens; the metrics
    are those of whole-batch calls."""
    from raycad.data import batching
    from raycad.train.build import build_model
    from raycad.train.loop import evaluate_batches

    cfg = FinetuneConfig().with_overrides({"model.overrides": {"d_model": 16, "n_layer": 1}})
    model = build_model(cfg, 2)
    ids = torch.randint(7, 11, (12, 24), generator=torch.Generator().manual_seed(1))
    batches = [{"input_ids": ids, "labels": torch.arange(12) % 2}]
    whole = evaluate_batches(model, batches, 2, torch.device("cpu")).compute(prefix="val_")
    calls: list[int] = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kw: calls.append(len(kw["input_ids"])) or forward(**kw))
    monkeypatch.setattr(batching, "CPU_BATCH_VALUES", 16 * 2 * 24 * 5)  # d_model 16, conjoined: 5 records of 24
    cut = evaluate_batches(model, batches, 2, torch.device("cpu")).compute(prefix="val_")
    assert calls == [5, 5, 2]
    assert cut["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)
    assert cut["val_auroc"] == pytest.approx(whole["val_auroc"], rel=1e-9)
