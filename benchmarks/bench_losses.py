"""Forward+backward time and peak memory of compiled losses, as ratios to BCE-with-logits.

Every configuration is timed side by side in one run: BCE, the compiled loss (eager,
and with ``compile=True``), and autograd through a plain PyTorch composition of the
same formula; repetitions are interleaved round-robin so that load on a shared
machine hits all candidates alike, and medians are reported. Before timing, each
compiled loss is checked against the plain composition (values and gradients).

    python benchmarks/bench_losses.py                 # full grid, n = 1e3 ... 1e7
    python benchmarks/bench_losses.py --quick         # n = 1e6 only, float32
    python benchmarks/bench_losses.py --memory        # add peak memory (subprocess per case)
    python benchmarks/bench_losses.py --keep-memory   # glibc keeps freed memory: no page faults
    python benchmarks/bench_losses.py --previous DIR  # also time modules an earlier metricc generated

``--previous DIR`` times, side by side with the current loss, the generated modules of an earlier
version, written as ``DIR/{metric}_{relaxation}_{1|9}.py`` (one or nine thresholds) by that version's
``metricc compile``; see docs/performance.md for the commands. That is the before/after comparison
of a change to the runtime or the generated code, measured in one run.

By default glibc returns large freed blocks to the system, so every large temporary
costs page faults on its next allocation, and how many depends on what else the process
allocates (autograd through the plain composition allocates many). ``--keep-memory``
re-runs the benchmark with glibc told to keep freed blocks of up to 32 MB, as caching
allocators such as jemalloc or tcmalloc do: timings then measure arithmetic and memory
traffic, not the kernel zeroing pages.

Peak memory is the high-water mark of the process's resident memory (VmHWM, reset
through /proc/self/clear_refs) above its level just before one forward+backward,
measured in a fresh subprocess per case with glibc's malloc returning every large
block to the system on free (MALLOC_MMAP_THRESHOLD_), so that residency follows
live tensors. Linux only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import torch

import metricc

THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
METRICS = ("f1", "balanced_accuracy", "mcc")
RELAXATIONS = ("anyloss", "linear", "identity")


def plain_loss(metric: str, relaxation: str, thresholds) -> callable:
    """The loss written the obvious way in PyTorch; autograd differentiates it."""
    def soft(p, t):
        if relaxation == "anyloss":
            return torch.sigmoid(73.0 * (p - t))
        if relaxation == "linear":
            tm, d = min(t, 1 - t), 0.2
            m1, m2, m3 = d / (t - tm / 2), (1 - 2 * d) / tm, d / (1 - t - tm / 2)
            return torch.where(p < t - tm / 2, p * m1,
                               torch.where(p > t + tm / 2, p * m3 + (1 - d - m3 * (t + tm / 2)), p * m2 + 0.5 - m2 * t))
        return p

    def value(tp, fn, fp, tn):
        if metric == "f1":
            return 2 * tp / (2 * tp + fp + fn)
        if metric == "balanced_accuracy":
            return (tp / (tp + fn) + tn / (tn + fp)) / 2
        return (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))

    def loss(logits, target):
        p = torch.sigmoid(logits)
        total = 0
        for t in thresholds:
            yhat = soft(p, t)
            tp = (target * yhat).sum()
            fn = (target * (1 - yhat)).sum()
            fp = ((1 - target) * yhat).sum()
            tn = ((1 - target) * (1 - yhat)).sum()
            total = total + 1 - value(tp, fn, fp, tn)
        return total / len(thresholds)

    return loss


def bce(logits, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def make_batch(n: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=generator) < 0.1).to(dtype)
    logits = (torch.randn(n, generator=generator) + 2 * target - 1).to(dtype)
    return logits, target


def forward_backward(loss_fn, logits, target) -> float:
    x = logits.detach().requires_grad_(True)
    started = time.perf_counter()
    loss_fn(x, target).backward()
    return time.perf_counter() - started


def check_against_plain(compiled, plain, logits, target, dtype) -> None:
    """Refuse to time a loss whose value or gradient differs from the plain composition."""
    a, b = logits[:4096].detach().clone().requires_grad_(True), logits[:4096].detach().clone().requires_grad_(True)
    la, lb = compiled(a, target[:4096]), plain(b, target[:4096])
    la.backward()
    lb.backward()
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    if not (torch.allclose(la, lb, rtol=tolerance, atol=tolerance)
            and torch.allclose(a.grad, b.grad, rtol=tolerance * 10, atol=tolerance * 1e-2)):
        raise SystemExit(f"value check failed: {la.item()} vs {lb.item()}, "
                         f"max grad difference {(a.grad - b.grad).abs().max().item():.3g}")


def time_side_by_side(candidates: dict, logits, target, budget_seconds: float) -> dict:
    """Median seconds per forward+backward for each candidate, measured round-robin."""
    for fn in candidates.values():  # warm-up (and torch.compile's compilation)
        forward_backward(fn, logits, target)
    samples = {name: [] for name in candidates}
    started = time.perf_counter()
    rounds = 0
    while rounds < 5 or (time.perf_counter() - started < budget_seconds and rounds < 200):
        for name, fn in candidates.items():
            samples[name].append(forward_backward(fn, logits, target))
        rounds += 1
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_memory_after(setup: str) -> int:
    """Peak resident memory of ``fn(logits, target).backward()`` above the level just before it, in a fresh
    process whose glibc returns every large block on free (so residency follows live tensors). ``setup`` is
    module-level Python, run first in the benchmarks folder, that defines ``fn``, ``logits`` (requiring grad)
    and ``target`` and has called ``fn`` once to load its kernels. Shared with bench_multiclass.py."""
    code = f"""
import sys, warnings, torch
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
warnings.simplefilter("ignore")

def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field))

{setup}
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset VmHWM to the current residency
fn(logits, target).backward()
print(status("VmHWM:") - before)
"""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return int(result.stdout.strip().splitlines()[-1])


def peak_memory_bytes(spec: dict) -> int:
    """Peak resident memory of one forward+backward above the level before it (fresh process)."""
    return peak_memory_after(f"""
import json
from bench_losses import build_candidate, make_batch, forward_backward
spec = json.loads({json.dumps(json.dumps(spec))})
dtype = getattr(torch, spec["dtype"])
fn = build_candidate(spec["kind"], spec["metric"], spec["relaxation"], spec["thresholds"])
forward_backward(fn, *make_batch(1000, dtype))  # load kernels
logits, target = make_batch(spec["n"], dtype)
logits.requires_grad_(True)
""")


def load_previous(directory: str, metric: str, relaxation: str, thresholds: bool):
    """The loss class of a module an earlier metricc generated, or None where the file is missing."""
    import importlib.util

    path = os.path.join(directory, f"{metric}_{relaxation}_{9 if thresholds else 1}.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"previous_{metric}_{relaxation}_{int(thresholds)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return next(value for name, value in vars(module).items()
                if name.endswith("Loss") and isinstance(value, type) and issubclass(value, torch.nn.Module)
                and value.__module__ == module.__name__)()


def build_candidate(kind: str, metric: str, relaxation: str, thresholds: bool, validate: bool = True):
    levels = THRESHOLDS if thresholds else (0.5,)
    if kind == "bce":
        return bce
    if kind == "plain":
        return plain_loss(metric, relaxation, levels)
    return metricc.compile_metric(metric, relaxation=relaxation, thresholds=list(levels) if thresholds else None,
                                  compile=kind == "compiled", validate=validate)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e3,1e4,1e5,1e6,1e7", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--relaxations", default=",".join(RELAXATIONS))
    parser.add_argument("--quick", action="store_true", help="n = 1e6, float32 only")
    parser.add_argument("--compile", action="store_true", help="also time compile=True (torch.compile)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (n >= 1e6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per configuration")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                        help="the compiled losses check that targets are 0/1 (--no-validate: skip, as under compile)")
    parser.add_argument("--previous", metavar="DIR",
                        help="also time the modules an earlier metricc generated, DIR/{metric}_{relaxation}_{1|9}.py")
    parser.add_argument("--keep-memory", action="store_true",
                        help="re-run with glibc keeping freed blocks up to 32 MB (no page faults per temporary)")
    args = parser.parse_args(argv)
    keeping = all(os.environ.get(k) == v for k, v in KEEP_MEMORY.items())
    if args.keep_memory and not keeping:  # glibc reads these once, at process start
        arguments = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *arguments],
                  {**os.environ, **KEEP_MEMORY})
    if args.quick:
        args.sizes, args.dtypes = "1e6", "float32"
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    warnings.simplefilter("ignore", metricc.MetricWarning)

    print("# metricc loss benchmark: forward+backward, median time as a ratio to BCE-with-logits")
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}, "
          f"python {platform.python_version()}; target validation {'on' if args.validate else 'off'}; "
          f"allocator: {'glibc keeping freed blocks up to 32 MB' if keeping else 'glibc defaults'}\n")
    header = "| n | dtype | metric | relaxation | thresholds | BCE ms | compiled | plain autograd |"
    header += " torch.compile |" if args.compile else ""
    header += " previous version |" if args.previous else ""
    header += " peak mem compiled / plain / BCE |" if args.memory else ""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for n, dtype, metric, relaxation, thresholds in itertools.product(
            sizes, dtypes, args.metrics.split(","), args.relaxations.split(","), (False, True)):
        if relaxation == "identity" and thresholds:
            continue
        logits, target = make_batch(n, dtype)
        if args.compile:
            torch._dynamo.reset()  # each configuration gets the static-size code a fixed batch size gets
        candidates = {kind: build_candidate(kind, metric, relaxation, thresholds, args.validate)
                      for kind in ("bce", "eager", "plain") + (("compiled",) if args.compile else ())}
        previous = load_previous(args.previous, metric, relaxation, thresholds) if args.previous else None
        if previous is not None:
            candidates["previous"] = previous
            check_against_plain(previous, candidates["plain"], logits, target, dtype)
        check_against_plain(candidates["eager"], candidates["plain"], logits, target, dtype)
        times = time_side_by_side(candidates, logits, target, args.seconds)
        row = {"n": n, "dtype": str(dtype).replace("torch.", ""), "metric": metric, "relaxation": relaxation,
               "thresholds": 9 if thresholds else 1, "bce_ms": times["bce"] * 1e3,
               **{f"{k}_ratio": times[k] / times["bce"] for k in times if k != "bce"}}
        if args.memory and n >= 1_000_000:
            spec = {"n": n, "dtype": row["dtype"], "metric": metric, "relaxation": relaxation,
                    "thresholds": thresholds}
            eager = peak_memory_bytes({**spec, "kind": "eager"})
            plain = peak_memory_bytes({**spec, "kind": "plain"})
            reference = peak_memory_bytes({**spec, "kind": "bce"})
            row["peak_memory_mb"] = {"eager": eager / 2**20, "plain": plain / 2**20, "bce": reference / 2**20}
        rows.append(row)
        line = (f"| {n:.0e} | {row['dtype']} | {metric} | {relaxation} | {row['thresholds']} | {row['bce_ms']:.2f} | "
                f"{row['eager_ratio']:.2f}x | {row['plain_ratio']:.2f}x |")
        if args.compile:
            line += f" {row['compiled_ratio']:.2f}x |"
        if args.previous:
            line += f" {row['previous_ratio']:.2f}x |" if "previous_ratio" in row else " |"
        if args.memory:
            memory = row.get("peak_memory_mb")
            line += (f" {memory['eager']:.1f} / {memory['plain']:.1f} / {memory['bce']:.1f} MB |" if memory else " |")
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
