"""The checks and benchmarks for the first GPU machine (run by ``bench/gpu_check.sh``); results go to the
``## GPU check`` section of BENCHMARKS.md.

1. Environment: GPU, torch/CUDA, whether mamba_ssm and causal_conv1d import, the scan path for CUDA tensors.
2. Golden: the authors' reference outputs (``../shared/reference``) reproduced on CUDA in float32 through
   the fused kernels, and through the chunked scan (kernels off), max |error| of hidden states and logits.
3. bf16: forward + backward under bf16 autocast on CUDA (fused and chunked): finite loss and gradients, max
   logit difference from float32, cosine of the bf16 and float32 gradients.
4. Throughput: training step (forward + backward + AdamW) and inference, sequences/s, fused kernels vs the
   chunked scan, interleaved, best of ``--repeats``, bf16 autocast.
5. ``raycad finetune --gpu --workers 1 --epochs 1`` on the bundled demo: wall time, test metrics, seq/s.

    python bench/gpu_check.py --write            # everything (about 5 minutes on one GPU)
    python bench/gpu_check.py --skip-finetune    # checks and throughput only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTION = "## GPU check"
REFERENCE = REPO.parent / "shared" / "reference"
DEVICE = "cuda"
"""``--device cpu`` runs every step on CPU (a smoke test of this script; kernels then never run)."""


@contextlib.contextmanager
def kernels_enabled(on: bool):
    """Fused kernels on (the default decision for CUDA tensors) or off (chunked scan, PyTorch conv)."""
    from raycad.model import kernels

    saved = kernels.FUSED_DEVICE_TYPES
    kernels.FUSED_DEVICE_TYPES = saved if on else ()
    try:
        yield
    finally:
        kernels.FUSED_DEVICE_TYPES = saved


def _label(fused: bool) -> str:
    """Row label of the kernels-on / kernels-off runs (says so when there are no kernels to turn on)."""
    from raycad.model.kernels import fused_kernels

    if not fused:
        return "chunked scan"
    found = fused_kernels(torch.device(DEVICE))
    return "fused kernels" if found.selective_scan_fn else "default (kernels not installed)"


def environment() -> tuple[dict[str, Any], str]:
    from raycad.model.kernels import installed_kernels
    from raycad.model.scan import scan_path

    found = installed_kernels()
    versions = {}
    for name in ("mamba_ssm", "causal_conv1d"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001 - any import failure is reported, not raised
            versions[name] = f"not importable ({type(err).__name__})"
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (cpu smoke run)"
    info = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
            **versions, "scan_fn": found.selective_scan_fn is not None, "conv_fn": found.causal_conv1d_fn is not None,
            "scan_path": scan_path(torch.device(DEVICE))}
    md = (f"GPU {info['gpu']}, torch {info['torch']} (CUDA {info['cuda']}), mamba_ssm {info['mamba_ssm']}, "
          f"causal_conv1d {info['causal_conv1d']}; scan path for CUDA tensors: **{info['scan_path']}**.")
    return info, md


def golden() -> tuple[list[dict[str, Any]], str]:
    from safetensors.torch import load_file

    from raycad.model import CaduceusForSequenceClassification

    rows = []
    for case in ("caduceus_ps_tiny", "caduceus_ph_tiny"):
        if not (REFERENCE / case).is_dir():
            continue
        ref = load_file(str(REFERENCE / case / "golden.safetensors"), device=DEVICE)
        model = CaduceusForSequenceClassification.from_pretrained(REFERENCE / case).to(DEVICE).eval()
        for fused in (True, False):
            with kernels_enabled(fused), torch.no_grad():
                hidden = model.caduceus(ref["input_ids"]).last_hidden_state
                logits = model(ref["input_ids"]).logits
            rows.append({"case": case, "path": _label(fused),
                         "hidden_err": (hidden - ref["hidden_states"]).abs().max().item(),
                         "logits_err": (logits - ref["logits"]).abs().max().item()})
    md = ["Golden reference outputs on CUDA, float32 (tolerance 1e-4):", "",
          "| case | path | max err hidden | max err logits | ok |", "|---|---|---:|---:|---|"]
    md += [f"| {r['case']} | {r['path']} | {r['hidden_err']:.2e} | {r['logits_err']:.2e} | "
           f"{'yes' if max(r['hidden_err'], r['logits_err']) < 1e-4 else '**NO**'} |" for r in rows]
    if not rows:
        md = [f"Golden reference outputs: skipped ({REFERENCE} not found)."]
    return rows, "\n".join(md)


def _model(preset: str):
    from raycad.model import CaduceusConfig, CaduceusForSequenceClassification

    torch.manual_seed(0)
    return CaduceusForSequenceClassification(CaduceusConfig.from_preset(preset, num_labels=2)).to(DEVICE)


def _forward_backward(model, ids, labels, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
        out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    return out.loss.item(), out.logits.float().detach(), grads


def bf16(preset: str, batch: int, length: int) -> tuple[list[dict[str, Any]], str]:
    model = _model(preset)
    ids = torch.randint(7, 11, (batch, length), device=DEVICE)
    labels = torch.randint(0, 2, (batch,), device=DEVICE)
    rows = []
    for fused in (True, False):
        with kernels_enabled(fused):
            _, logits32, grads32 = _forward_backward(model, ids, labels, bf16=False)
            loss, logits, grads = _forward_backward(model, ids, labels, bf16=True)
        rows.append({"path": _label(fused), "loss": loss,
                     "finite": bool(torch.isfinite(grads).all() and torch.isfinite(torch.tensor(loss))),
                     "logit_diff": (logits - logits32).abs().max().item(),
                     "grad_cosine": torch.nn.functional.cosine_similarity(grads, grads32, dim=0).item()})
    md = [f"bf16 autocast forward + backward ({preset}, batch {batch}, L={length}) against float32:", "",
          "| path | loss | finite | max logit diff | gradient cosine |", "|---|---:|---|---:|---:|"]
    md += [f"| {r['path']} | {r['loss']:.4f} | {r['finite']} | {r['logit_diff']:.3g} | {r['grad_cosine']:.4f} |"
           for r in rows]
    return rows, "\n".join(md)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return min(times)


def _throughput_one(preset: str, length: int, batch: int, repeats: int) -> dict[str, Any]:
    model = _model(preset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(7, 11, (batch, length), device=DEVICE)
    labels = torch.randint(0, 2, (batch,), device=DEVICE)

    def train_step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer():
        with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            model(input_ids=ids)

    for fused in (True, False):  # warm up both paths first
        with kernels_enabled(fused):
            train_step()
            infer()
    best: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, best of `repeats`
        for fused in (True, False):
            with kernels_enabled(fused):
                for name, fn in (("train", train_step), ("infer", infer)):
                    key = f"{'fused' if fused else 'chunked'}_{name}_seq_s"
                    best[key] = max(best.get(key, 0.0), batch / _best_seconds(fn, 1))
    return {"preset": preset, "length": length, **best}


def throughput(presets: list[str], batch: int, lengths: list[int], repeats: int) -> tuple[list[dict], str]:
    rows = []
    for preset in presets:
        for length in lengths:
            rows.append(_throughput_one(preset, length, batch, repeats))
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
    md = [(f"Throughput on the GPU, bf16 autocast, batch {batch}, best of {repeats} interleaved runs "
           "(sequences/s; train = forward + backward + AdamW step):"), "",
          "| preset | L | train fused | train chunked | speedup | inference fused | inference chunked |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['preset']} | {r['length']} | **{r['fused_train_seq_s']:.0f}** | "
                  f"{r['chunked_train_seq_s']:.0f} | {r['fused_train_seq_s'] / r['chunked_train_seq_s']:.1f}x | "
                  f"{r['fused_infer_seq_s']:.0f} | {r['chunked_infer_seq_s']:.0f} |")
    return rows, "\n".join(md)


def finetune(timeout: int) -> tuple[dict[str, Any], str]:
    out = Path(tempfile.mkdtemp(prefix="raycad-gpu-check-"))
    command = ["raycad", "finetune", "--gpu", "--workers", "1", "--epochs", "1", "--output", str(out),
               "--name", "gpu-check", "--set", "train.precision=bf16"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, check=False, timeout=timeout, capture_output=True, text=True)
        status = f"exit {proc.returncode}"
        tail = (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        status, tail = f"timed out after {timeout} s", ""
    wall = time.perf_counter() - start
    results_file = out / "gpu-check" / "results.json"
    if not results_file.is_file():
        return {"status": status}, (f"`{' '.join(command)}`: **failed** ({status}, {wall:.0f} s); last output:\n\n"
                                    f"```\n{tail}\n```")
    results = json.loads(results_file.read_text())
    test = results.get("test_metrics", {})
    history = results.get("history", [{}])
    row = {"status": status, "wall_s": wall, **{k: test.get(f"test_{k}") for k in ("accuracy", "f1", "mcc", "auroc")},
           "train_seq_s": history[-1].get("train_sequences_per_s")}
    md = (f"`{' '.join(command)}` (bundled demo, 1 epoch): {status}, wall {wall:.0f} s, training "
          f"{row['train_seq_s'] or float('nan'):.0f} seq/s; test accuracy {row['accuracy']:.3f}, F1 {row['f1']:.3f}, "
          f"MCC {row['mcc']:.3f}, AUROC {row['auroc']:.3f}.")
    return row, md


def write_section(fragments: list[str], command: str) -> None:
    """Replace (or append) the ``## GPU check`` section of BENCHMARKS.md."""
    header = (f"{SECTION}\n\n_Command: `{command}` (from `bench/gpu_check.sh`); date: "
              f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}._\n")
    body = header + "\n" + "\n\n".join(fragments) + "\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + body
    BENCHMARKS_MD.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["caduceus-ps-1k-d256-l4", "caduceus-ph-1k-d256-l4"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--finetune-timeout", type=int, default=300)
    parser.add_argument("--write", action="store_true", help=f"update the {SECTION!r} section of BENCHMARKS.md")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke test of this script")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    os.environ.pop("RAYCAD_SELECTIVE_SCAN", None)
    fragments, failures = [], []
    steps = [("environment", environment), ("golden", golden),
             ("bf16", lambda: bf16(args.presets[0], 8, max(args.lengths))),
             ("throughput", lambda: throughput(args.presets, args.batch, args.lengths, args.repeats))]
    if not args.skip_finetune:
        steps.append(("finetune", lambda: finetune(args.finetune_timeout)))
    for name, step in steps:
        start = time.perf_counter()
        try:
            result, md = step()
        except Exception as err:  # noqa: BLE001 - one failed step is reported, the others still run
            result, md = None, f"{name}: **failed**: {type(err).__name__}: {err}"
            failures.append(name)
        print(f"[gpu_check] {name} ({time.perf_counter() - start:.0f} s): {json.dumps(result, default=str)}",
              flush=True)
        fragments.append(md)
        if args.write:  # after every step, so a run cut short by its time limit still leaves its results
            write_section(fragments, "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.write:
        print(f"[gpu_check] wrote {SECTION!r} in {BENCHMARKS_MD}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
