"""Selective-scan and model training-step benchmarks; results go to ``## Selective scan`` of BENCHMARKS.md.

Every comparison runs the chunked pure-PyTorch scan and the fused numba scan in the same process, interleaved.

* ``scan``: forward+backward of `selective_scan_chunked` and `selective_scan_fused` on model-like inputs
  (softplus, delta_bias, D, z gating) at B=8, D=512, N=16 and each ``--lengths`` (CPU, float32), best of
  ``--repeats``; both checked against the sequential reference (max relative error of output and gradients).
* ``model``: training step (forward + backward + AdamW) of `CaduceusForSequenceClassification` for each
  ``--shapes`` PRESET:L, batch ``--model-batch``, ``model.scan_impl`` chunked and fused alternating (with
  ``--flip-baseline`` also the fused scan with the reverse direction on flipped copies).
* ``memory``: peak RSS growth of one training step of ``--memory-preset`` at ``--memory-length``, each path in
  a fresh process.
* ``limit``: this machine's matmul GFLOP/s and memory bandwidth, and the step's FLOPs and activation bytes:
  a lower bound for the step time and how far each path is from it.

    python bench/scan.py --threads 1 --write
    python bench/scan.py --only scan --lengths 251 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
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
CLOCK = time.perf_counter
"""The timer of every measurement: wall clock, or with ``--cpu-time`` this process's CPU time (on a machine
shared with other jobs, CPU time leaves out the time the process waited for a core)."""
CLOCK_NAME = "wall clock"


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


def scan_inputs(batch: int, dim: int, dstate: int, length: int, seed: int = 0,
                batch_major: bool = False) -> dict[str, torch.Tensor]:
    """Inputs shaped and scaled like a Mamba layer's at initialisation (S4D-real A, dt in [1e-3, 1e-1]).

    As in raycad's model, the [batch, dim, length] tensors are views of time-major [length, batch, dim]
    storage (and B/C [batch, dstate, length] views of [length, batch, dstate]); with ``batch_major`` views of
    [batch, length, dim] storage (the fused model's mixer layout).
    """
    g = torch.Generator().manual_seed(seed)
    dt_init = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))

    def time_major(rows: int, scale: float = 1.0) -> torch.Tensor:
        if batch_major:
            return (torch.randn(batch, length, rows, generator=g) * scale).permute(0, 2, 1)
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
    start = CLOCK()
    out = fn(**inputs, delta_softplus=True)
    mid = CLOCK()
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out)
    end = CLOCK()
    return mid - start, end - mid, out.detach(), dict(zip(inputs, grads))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def best_fwd_bwd(fn, inputs, grad_out, repeats: int) -> tuple[float, float, torch.Tensor, dict]:
    """(best forward s, best forward+backward s, output, gradients) over ``repeats`` runs after a warm-up."""
    runs = [fwd_bwd(fn, inputs, grad_out) for _ in range(repeats + 1)][1:]
    _, _, out, grads = runs[-1]
    return min(r[0] for r in runs), min(r[0] + r[1] for r in runs), out, grads


def bench_scan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Chunked vs fused scan, forward+backward, interleaved in one process (best of ``--repeats`` each), and
    both against the sequential reference (timed once) for exactness."""
    from raycad.model.scan import (
        fused_available,
        selective_scan_chunked,
        selective_scan_fused,
        selective_scan_reference,
    )

    if not fused_available():
        raise SystemExit("the fused scan is unavailable here (numba missing?): nothing to compare")
    rows = []
    for length in args.lengths:
        inputs = scan_inputs(args.batch, args.dim, args.dstate, length, batch_major=args.layout == "batch")
        grad_out = torch.randn(args.batch, args.dim, length, generator=torch.Generator().manual_seed(1))
        load_before = load()
        best = {"chunked": [math.inf, math.inf], "fused": [math.inf, math.inf]}
        results = {}
        for _ in range(args.repeats):  # interleaved, so load changes hit both paths alike
            for name, fn in (("chunked", selective_scan_chunked), ("fused", selective_scan_fused)):
                fwd, total, out, grads = best_fwd_bwd(fn, inputs, grad_out, 1)
                best[name] = [min(best[name][0], fwd), min(best[name][1], total)]
                results[name] = (out, grads)
        row = {"length": length}
        if not args.no_reference:
            ref_fwd, ref_bwd, ref_out, ref_grads = fwd_bwd(selective_scan_reference, inputs, grad_out)
            row["ref_total_s"] = ref_fwd + ref_bwd
            for name, (out, grads) in results.items():
                errors = [rel_err(out, ref_out)] + [rel_err(grads[k], ref_grads[k]) for k in ARG_NAMES]
                row[f"{name}_max_rel_err"] = max(errors)
        for name in best:
            row[f"{name}_fwd_ms"], row[f"{name}_total_ms"] = best[name][0] * 1e3, best[name][1] * 1e3
        row["speedup"] = best["chunked"][1] / best["fused"][1]
        row["load"] = max(load_before, load())
        console.print(row)
        rows.append(row)
    md = [
        (f"Fused (numba) vs chunked scan, forward+backward, CPU float32, B={args.batch}, D={args.dim}, "
         f"N={args.dstate}, delta_softplus + delta_bias + D + z, {torch.get_num_threads()} threads, inputs stored "
         f"{args.layout}-major; both paths "
         f"interleaved in one process, best of {args.repeats} each. Errors: max |x - ref| / max |ref| over the "
         "output and the gradients of u, delta, A, B, C, D, z, delta_bias against the sequential reference."),
        "",
        ("| L | chunked fwd (ms) | chunked fwd+bwd (ms) | fused fwd (ms) | fused fwd+bwd (ms) | fused / chunked | "
         "max rel err chunked | max rel err fused | load avg |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['length']} | {r['chunked_fwd_ms']:.1f} | {r['chunked_total_ms']:.1f} | {r['fused_fwd_ms']:.1f} | "
            f"{r['fused_total_ms']:.1f} | **{r['speedup']:.1f}x** | {r.get('chunked_max_rel_err', math.nan):.1e} | "
            f"{r.get('fused_max_rel_err', math.nan):.1e} | {r['load']:.1f} |"
        )
    return rows, "\n".join(md)


# ---- model training step: chunked vs fused ----------------------------------------------------------------------


def _train_setup(preset: str, length: int, batch: int):
    from raycad.model import CaduceusConfig, CaduceusForSequenceClassification

    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(CaduceusConfig.from_preset(preset, num_labels=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(7, 11, (batch, length))
    labels = torch.randint(0, 2, (batch,))
    return model, optimizer, ids, labels


def train_step(model, optimizer, ids, labels) -> float:
    return timed_train_step(model, optimizer, ids, labels)[0]


def timed_train_step(model, optimizer, ids, labels) -> tuple[float, float]:
    """(seconds by `CLOCK`, wall-clock seconds) of one forward + backward + AdamW step."""
    start, wall = CLOCK(), time.perf_counter()
    loss = model(ids, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return CLOCK() - start, time.perf_counter() - wall


def bench_model(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Training step (forward + backward + AdamW) per preset and length, chunked vs fused interleaved (and with
    ``--flip-baseline`` the fused scan with the reverse direction on flipped copies, as before the kernels walked
    it backwards)."""
    from raycad.model import modeling
    from raycad.model.scan import set_scan_impl

    rows = []
    threads_before = torch.get_num_threads()
    for shape, threads in [(s, t) for t in args.model_threads or [threads_before] for s in args.shapes]:
        preset, length = shape.rsplit(":", 1)[0], int(shape.rsplit(":", 1)[1])
        torch.set_num_threads(threads)
        model, optimizer, ids, labels = _train_setup(preset, length, args.model_batch)
        model.train()
        load_before = load()
        times: dict[str, list[tuple[float, float]]] = {"chunked": [], "fused": []}
        if args.flip_baseline:
            times["fused_flip"] = []

        def use(impl: str) -> None:  # fused_flip: the fused scan with the reverse direction on flipped copies
            set_scan_impl(impl.removesuffix("_flip"))
            modeling.REVERSE_IN_KERNELS = impl != "fused_flip"

        for impl in times:  # warm-up (compiles / first allocations)
            use(impl)
            train_step(model, optimizer, ids, labels)
        for _ in range(args.model_steps):
            for impl, seconds in times.items():
                use(impl)
                seconds.append(timed_train_step(model, optimizer, ids, labels))
        use("fused")
        set_scan_impl("auto")
        best = {k: min(s for s, _ in v) for k, v in times.items()}
        best_wall = {k: min(w for _, w in v) for k, v in times.items()}
        row = {
            "preset": preset, "length": length, "threads": torch.get_num_threads(),
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "chunked_step_s": best["chunked"], "fused_step_s": best["fused"],
            "chunked_seq_s": args.model_batch / best["chunked"], "fused_seq_s": args.model_batch / best["fused"],
            "speedup": best["chunked"] / best["fused"], "wall_speedup": best_wall["chunked"] / best_wall["fused"],
            "load": max(load_before, load()),
        }
        if args.flip_baseline:
            row |= {"fused_flip_step_s": best["fused_flip"], "flip_speedup": best["fused_flip"] / best["fused"]}
        console.print(row)
        rows.append(row)
        _MODEL_ROWS.setdefault((preset, length), row)
        del model, optimizer
    torch.set_num_threads(threads_before)
    md = [
        (f"`CaduceusForSequenceClassification` training step on CPU (float32, batch {args.model_batch}, forward + "
         "backward + AdamW; torch and numba threads as in the table): the same model and batch with "
         f"`model.scan_impl` chunked and fused alternating step by step, best of {args.model_steps} each after "
         f"one warm-up step each. Step times by {CLOCK_NAME}; the last column is the same ratio by wall clock."),
        "",
        ("| preset | params (M) | L | threads | chunked step (s) | chunked seq/s | fused step (s) | fused seq/s | "
         "fused / chunked | wall-clock ratio | load avg |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['preset']} | {r['params_M']:.2f} | {r['length']} | {r['threads']} | {r['chunked_step_s']:.3f} | "
            f"{r['chunked_seq_s']:.1f} | {r['fused_step_s']:.3f} | {r['fused_seq_s']:.1f} | **{r['speedup']:.1f}x** | "
            f"{r['wall_speedup']:.1f}x | {r['load']:.1f} |"
        )
    return rows, "\n".join(md)


# ---- peak memory of a training step (one subprocess per path) -----------------------------------------------


def _step_memory_child(preset: str, length: int, batch: int, impl: str, threads: int) -> None:
    """Run in a fresh process: one warm-up step, then report the peak RSS growth of one more step (MiB)."""
    import resource

    import psutil

    from raycad.model.scan import set_scan_impl

    torch.set_num_threads(threads)
    set_scan_impl(impl)
    model, optimizer, ids, labels = _train_setup(preset, length, batch)
    train_step(model, optimizer, ids, labels)
    rss_before = psutil.Process().memory_info().rss
    seconds = train_step(model, optimizer, ids, labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"RESULT {max(0, peak - rss_before) / 2**20:.1f} {peak / 2**20:.1f} {seconds:.3f}")


def bench_memory(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    import subprocess

    rows = []
    preset, length = args.memory_preset, args.memory_length
    for impl in ("chunked", "fused"):
        code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import scan; "
                f"scan._step_memory_child({preset!r}, {length}, {args.model_batch}, {impl!r}, {args.threads})")
        load_before = load()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        growth, peak, seconds = map(float, proc.stdout.split("RESULT")[-1].split())
        row = {"impl": impl, "preset": preset, "length": length, "step_peak_growth_MiB": growth,
               "process_peak_MiB": peak, "step_s": seconds, "load": max(load_before, load())}
        console.print(row)
        rows.append(row)
    md = [
        (f"Peak memory of one training step of `{preset}` at L={length}, batch {args.model_batch} (float32, "
         f"{args.threads} thread(s)), each path in a fresh process after one warm-up step: growth of the peak RSS "
         "(`ru_maxrss`) over the RSS before the step, and the process peak."),
        "",
        "| scan | step peak RSS growth (MiB) | process peak RSS (MiB) | step (s) | load avg |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(f"| {r['impl']} | {r['step_peak_growth_MiB']:.0f} | {r['process_peak_MiB']:.0f} | "
                  f"{r['step_s']:.2f} | {r['load']:.1f} |")
    return rows, "\n".join(md)


# ---- physical limit of the step ------------------------------------------------------------------------------

SCAN_FLOPS_PER_STATE = 20
"""Useful floating-point operations per state element and step, forward + backward, counting exp as one:
forward exp(delta' A), x = dA x + w B, y += C x (6); backward G = C dy + dA G, dB, dC, du, d(delta'), dA (14)."""

_MODEL_ROWS: dict[tuple[str, int], dict[str, Any]] = {}


def machine_peaks(threads: int) -> tuple[float, float]:
    """(float32 matmul GFLOP/s, memory copy bandwidth GB/s) measured here with ``threads`` threads, best of 5."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    mm = min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
    src, dst = torch.randn(64 << 20), torch.empty(64 << 20)  # 256 MiB each, far beyond the caches
    dst.copy_(src)
    copy = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    return 2 * 2048**3 / mm / 1e9, 2 * src.nbytes / copy / 1e9


def _timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def step_cost(preset: str, length: int, batch: int) -> dict[str, float]:
    """FLOPs (matmuls counted by torch's FlopCounterMode, plus the scan's) and the bytes a training step must
    move at least (activations saved for backward written once and read once, plus AdamW's parameter state)."""
    from torch.utils.flop_counter import FlopCounterMode

    from raycad.model.scan import set_scan_impl

    set_scan_impl("fused")
    model, _, ids, labels = _train_setup(preset, length, batch)
    cfg = model.config
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids, labels=labels).loss
    with FlopCounterMode(display=False) as counter_bwd:
        loss.backward()
    set_scan_impl("auto")
    strands = 2 if cfg.rcps else 1
    mamba = cfg.mamba_kwargs
    d_inner = int(mamba.get("expand", 2) * cfg.d_model)
    directions = 2 if cfg.bidirectional else 1
    states = cfg.n_layer * strands * directions * batch * d_inner * mamba.get("d_state", 16) * length
    params = sum(p.numel() for p in model.parameters())
    return {
        "matmul_gflop": (counter.get_total_flops() + counter_bwd.get_total_flops()) / 1e9,
        "scan_gflop": states * SCAN_FLOPS_PER_STATE / 1e9,
        "bytes_gb": (2 * sum(saved.values()) + 7 * 4 * params) / 1e9,
    }


def bench_limit(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    gflops, bandwidth = machine_peaks(torch.get_num_threads())
    console.print({"matmul_gflops": gflops, "copy_gb_s": bandwidth})
    rows = []
    for shape in args.shapes:
        preset, length = shape.rsplit(":", 1)[0], int(shape.rsplit(":", 1)[1])
        cost = step_cost(preset, length, args.model_batch)
        compute_s = (cost["matmul_gflop"] + cost["scan_gflop"]) / gflops
        memory_s = cost["bytes_gb"] / bandwidth
        limit = max(compute_s, memory_s)
        measured = _MODEL_ROWS.get((preset, length), {})
        row = {"preset": preset, "length": length, **cost, "compute_s": compute_s, "memory_s": memory_s,
               "limit_s": limit, "chunked_x": measured.get("chunked_step_s", math.nan) / limit,
               "fused_x": measured.get("fused_step_s", math.nan) / limit, "load": load()}
        console.print(row)
        rows.append(row)
    md = [
        (f"Physical limit of the training step on this machine ({torch.get_num_threads()} thread(s)): float32 "
         f"matmul {gflops:.0f} GFLOP/s (2048x2048 `torch.mm`) and memory copy {bandwidth:.1f} GB/s (256 MiB "
         "tensors) measured here. FLOPs = matmuls (torch `FlopCounterMode`, forward + backward) + the scan "
         f"({SCAN_FLOPS_PER_STATE} FLOPs per state element and step, forward + backward); bytes = activations "
         "saved for backward (written once, read once) + AdamW's 7 float32 reads/writes per parameter. Limit = "
         "max(FLOPs / matmul peak, bytes / bandwidth): no implementation can beat it; \"x limit\" = measured step "
         "(table above) / limit."),
        "",
        ("| preset | L | matmul GFLOP | scan GFLOP | GB moved | compute bound (s) | memory bound (s) | "
         "chunked x limit | fused x limit |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(f"| {r['preset']} | {r['length']} | {r['matmul_gflop']:.1f} | {r['scan_gflop']:.1f} | "
                  f"{r['bytes_gb']:.2f} | {r['compute_s']:.3f} | {r['memory_s']:.3f} | {r['chunked_x']:.1f}x | "
                  f"{r['fused_x']:.1f}x |")
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


BENCHMARKS = {"scan": bench_scan, "model": bench_model, "memory": bench_memory, "limit": bench_limit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dstate", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[251, 1024])
    parser.add_argument("--layout", choices=["time", "batch"], default="time",
                        help="scan inputs stored time-major (the chunked model's) or batch-major (the fused one's)")
    parser.add_argument("--repeats", type=int, default=5, help="scan repetitions per path (best of)")
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time, not wall clock")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) sequential reference")
    parser.add_argument("--shapes", nargs="+", metavar="PRESET:L",
                        default=["caduceus-ph-1k-d64-l2:251", "caduceus-ps-1k-d256-l4:251",
                                 "caduceus-ps-1k-d256-l4:1024"])
    parser.add_argument("--model-batch", type=int, default=32)
    parser.add_argument("--model-steps", type=int, default=3, help="timed steps per path (best of)")
    parser.add_argument("--flip-baseline", action="store_true",
                        help="model steps: also time the fused scan with the reverse direction on flipped copies")
    parser.add_argument("--model-threads", type=int, nargs="+",
                        help="thread counts of the model-step table (default: --threads)")
    parser.add_argument("--memory-preset", default="caduceus-ps-1k-d256-l4")
    parser.add_argument("--memory-length", type=int, default=1024)
    parser.add_argument("--write", action="store_true", help=f"update the {SECTION!r} section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    global CLOCK, CLOCK_NAME
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    CLOCK_NAME = "this process's CPU time (all threads)" if args.cpu_time else "wall clock"
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
