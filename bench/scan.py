"""Selective-scan and model training-throughput benchmarks; results go to ``## Selective scan`` of BENCHMARKS.md.

* ``scan``: forward+backward of the chunked pure-PyTorch scan (`raycad.model.scan.selective_scan_chunked`)
  against the sequential reference (`selective_scan_reference`) on model-like inputs (softplus, delta_bias,
  D, z gating) at B=8, D=512, N=16 and each ``--lengths`` (CPU, float32). The reference runs once (it is
  slow), the fast scan ``--repeats`` times (median). Reports the speedup and the maximum relative error
  (max |fast - ref| / max |ref|) of the output and of every gradient. Target: >= 100x at L=1024, <= 1e-4.
* ``model``: training throughput (sequences/s of forward + backward + AdamW step) of
  `CaduceusForSequenceClassification` built from each ``--presets`` at each ``--model-lengths``, batch
  ``--model-batch``, plus inference throughput.

    python bench/scan.py --write
    python bench/scan.py --only scan --lengths 256 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTION = "## Selective scan"
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

console = Console()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> float:
    return os.getloadavg()[0]


# ---- scan: fast vs reference --------------------------------------------------------------------------------


def scan_inputs(batch: int, dim: int, dstate: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs shaped and scaled like a Mamba layer's at initialisation (S4D-real A, dt in [1e-3, 1e-1]).

    As in raycad's model, the [batch, dim, length] tensors are views of time-major [length, batch, dim]
    storage (and B/C [batch, dstate, length] views of [length, batch, dstate]).
    """
    g = torch.Generator().manual_seed(seed)
    dt_init = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))

    def time_major(rows: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(length, batch, rows, generator=g) * scale).permute(1, 2, 0)

    tensors = {
        "u": time_major(dim),
        "delta": time_major(dim, 0.5),
        "A": -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1),
        "B": time_major(dstate),
        "C": time_major(dstate),
        "D": torch.ones(dim),
        "z": time_major(dim),
        "delta_bias": dt_init + torch.log(-torch.expm1(-dt_init)),  # softplus^-1(dt_init)
    }
    return {k: v.requires_grad_() for k, v in tensors.items()}


def fwd_bwd(fn, inputs: dict[str, torch.Tensor], grad_out: torch.Tensor):
    """(forward seconds, backward seconds, output, gradients) of one forward+backward."""
    start = time.perf_counter()
    out = fn(**inputs, delta_softplus=True)
    mid = time.perf_counter()
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out)
    end = time.perf_counter()
    return mid - start, end - mid, out.detach(), dict(zip(inputs, grads))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def bench_scan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    from raycad.model.scan import selective_scan_chunked, selective_scan_reference

    rows = []
    for length in args.lengths:
        inputs = scan_inputs(args.batch, args.dim, args.dstate, length)
        grad_out = torch.randn(length, args.batch, args.dim, generator=torch.Generator().manual_seed(1))
        grad_out = grad_out.permute(1, 2, 0)
        fast = [fwd_bwd(selective_scan_chunked, inputs, grad_out) for _ in range(args.repeats + 1)][1:]
        fast_fwd = statistics.median(r[0] for r in fast)
        fast_total = statistics.median(r[0] + r[1] for r in fast)
        load_before = load()
        ref_fwd, ref_bwd, ref_out, ref_grads = fwd_bwd(selective_scan_reference, inputs, grad_out)
        _, _, out, grads = fast[-1]
        errors = {"out": rel_err(out, ref_out)} | {k: rel_err(grads[k], ref_grads[k]) for k in ARG_NAMES}
        row = {
            "length": length,
            "ref_fwd_s": ref_fwd,
            "ref_total_s": ref_fwd + ref_bwd,
            "fast_fwd_ms": fast_fwd * 1e3,
            "fast_total_ms": fast_total * 1e3,
            "speedup": (ref_fwd + ref_bwd) / fast_total,
            "max_rel_err_out": errors["out"],
            "max_rel_err_grad": max(v for k, v in errors.items() if k != "out"),
            "worst_grad": max((k for k in errors if k != "out"), key=errors.get),
            "load": max(load_before, load()),
        }
        console.print(row)
        rows.append(row)
    md = [
        (f"Fast chunked scan vs sequential reference, forward+backward (CPU float32, B={args.batch}, "
        f"D={args.dim}, N={args.dstate}, delta_softplus + delta_bias + D + z). Reference timed once, fast scan "
        f"median of {args.repeats}. Errors are max |fast - ref| / max |ref| over the output and over the "
        "gradients of u, delta, A, B, C, D, z and delta_bias."),
        "",
        ("| L | reference fwd+bwd (s) | fast fwd (ms) | fast fwd+bwd (ms) | speedup | max rel err out | "
        "max rel err grads (worst) | load avg |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['length']} | {r['ref_total_s']:.2f} | {r['fast_fwd_ms']:.1f} | {r['fast_total_ms']:.1f} | "
            f"**{r['speedup']:.0f}x** | {r['max_rel_err_out']:.1e} | {r['max_rel_err_grad']:.1e} "
            f"({r['worst_grad']}) | {r['load']:.1f} |"
        )
    return rows, "\n".join(md)


# ---- model training throughput --------------------------------------------------------------------------------


def bench_model(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    from raycad.model import CaduceusConfig, CaduceusForSequenceClassification

    rows = []
    for preset in args.presets:
        for length in args.model_lengths:
            torch.manual_seed(0)
            model = CaduceusForSequenceClassification(CaduceusConfig.from_preset(preset, num_labels=2))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
            ids = torch.randint(7, 11, (args.model_batch, length))
            labels = torch.randint(0, 2, (args.model_batch,))
            model.train()
            step_times, load_before = [], load()
            for _ in range(args.model_steps + 1):
                start = time.perf_counter()
                loss = model(ids, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step_times.append(time.perf_counter() - start)
            model.eval()
            eval_times = []
            with torch.inference_mode():
                for _ in range(args.model_steps + 1):
                    start = time.perf_counter()
                    model(ids)
                    eval_times.append(time.perf_counter() - start)
            step, infer = statistics.median(step_times[1:]), statistics.median(eval_times[1:])
            row = {
                "preset": preset,
                "length": length,
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                "train_step_s": step,
                "train_seq_per_s": args.model_batch / step,
                "infer_seq_per_s": args.model_batch / infer,
                "finite_loss": bool(torch.isfinite(loss).item()),
                "load": max(load_before, load()),
            }
            console.print(row)
            rows.append(row)
            del model, optimizer
    md = [
        (f"`CaduceusForSequenceClassification` training throughput on CPU (float32, batch {args.model_batch}, "
        f"forward + backward + AdamW step, median of {args.model_steps} steps after one warm-up) and inference "
        "throughput (`torch.inference_mode`, same batch)."),
        "",
        "| preset | params (M) | L | train step (s) | train seq/s | inference seq/s | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['preset']} | {r['params_M']:.2f} | {r['length']} | {r['train_step_s']:.2f} | "
            f"**{r['train_seq_per_s']:.1f}** | {r['infer_seq_per_s']:.1f} | {r['load']:.1f} |"
        )
    return rows, "\n".join(md)


# ---- BENCHMARKS.md ------------------------------------------------------------------------------------------


def write_section(fragments: list[str], command: str, max_load: float) -> None:
    """Replace (or append) the ``## Selective scan`` section of BENCHMARKS.md, leaving other sections alone."""
    shared = (
        f" The machine was shared with other jobs while this ran (1-minute load average up to {max_load:.1f} "
        f"on {os.cpu_count()} cores), so timings are pessimistic." if max_load > 1.5 else ""
    )
    header = (
        f"{SECTION}\n\n_Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; command: `{command}`; date: "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.{shared}_\n"
    )
    body = header + "\n" + "\n\n".join(fragments) + "\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + body
    BENCHMARKS_MD.write_text(text)


BENCHMARKS = {"scan": bench_scan, "model": bench_model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dstate", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="fast-scan repetitions (median)")
    parser.add_argument("--presets", nargs="+", default=["caduceus-ps-1k-d256-l4", "caduceus-ps-1k-d128-l4"])
    parser.add_argument("--model-lengths", type=int, nargs="+", default=[251, 1024])
    parser.add_argument("--model-batch", type=int, default=32)
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"update the {SECTION!r} section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fragments, loads = [], [load()]
    for name in args.only or list(BENCHMARKS):
        console.rule(f"bench {name}")
        rows, markdown = BENCHMARKS[name](args)
        loads += [r["load"] for r in rows]
        table = Table(*rows[0].keys(), title=name)
        for r in rows:
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()))
        console.print(table)
        fragments.append(markdown)
    if args.write:
        command = "python bench/scan.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(fragments, command.strip(), max(loads))
        console.print(f"wrote {SECTION!r} in {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
