"""Cost per call at small batches: forward+backward of the compiled F1 loss against BCE and autograd.

Issue 14 item 3: at n in {64, 256, 1024}, float32 and float64, one thread, the compiled F1 loss
(AnyLoss amplifier, one threshold, target validation on) should cost no more than autograd through
the plain formula, and at most 2x ``binary_cross_entropy_with_logits`` at n = 256.

Measured in CPU time of this process (``time.process_time``), one intra-op thread, so that other
processes on a shared machine change the numbers less than wall-clock time would. Candidates are
timed round-robin: each round times a block of calls of every candidate in turn, and every ratio is
the median over rounds of the ratio within a round (candidates of one round ran under the same
load). Before timing, the compiled losses are checked against the plain formula (value and
gradient). ``--floor`` adds two reference points that are not losses to use: a Python
``autograd.Function`` that only sums its input (what any custom Function costs), and a minimal
hand-written one for this one loss (AnyLoss F1, no input checks, weights or ``zero_division``: the
fewest eager operations the exact formulas allow). ``--ops`` counts the aten operations of one
forward+backward (a TorchDispatchMode); ``--profile N`` prints torch.profiler's table for the compiled
loss at batch size N.

    python benchmarks/bench_small.py                       # the grid, about 2 minutes of CPU
    python benchmarks/bench_small.py --ops --profile 256   # where the time goes
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import sys
import time
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import metricc

SIZES = (64, 256, 1024)
DTYPES = ("float32", "float64")


def plain_f1(logits, target):
    """1 − F1 of the AnyLoss soft confusion matrix, written plainly; autograd differentiates it."""
    yhat = torch.sigmoid(73.0 * (torch.sigmoid(logits) - 0.5))
    tp = (target * yhat).sum()
    fn = (target * (1 - yhat)).sum()
    fp = ((1 - target) * yhat).sum()
    return 1 - 2 * tp / (2 * tp + fp + fn)


def bce(logits, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


class SumFunction(torch.autograd.Function):
    """A custom Function that sums its input: the fixed cost of any Python autograd.Function."""

    @staticmethod
    def forward(ctx, logits, target):
        ctx.size = logits.shape[0]
        return logits.sum()

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.size).clone(), None


_SLOPE = torch.ops.aten.sigmoid_backward.grad_input


class MinimalF1(torch.autograd.Function):
    """1 − F1 with the AnyLoss amplifier (L = 73, t = 1/2) in as few eager operations as the exact forms allow:
    ŷ and 1 − ŷ as σ(±a) into one buffer, the four direct sums as one matrix product, the factors as
    Python floats; backward σ(−|z|) once, the factor by label without cancellation, two slopes."""

    scale = 73.0

    @staticmethod
    def forward(ctx, logits, target):
        scale = MinimalF1.scale
        buffer = torch.empty((2, logits.shape[0]), dtype=logits.dtype)
        a = torch.sigmoid(logits, out=buffer[0]).mul_(scale).sub_(scale / 2)
        torch.neg(a, out=buffer[1])
        buffer.sigmoid_()  # ŷ, 1 − ŷ
        labels = torch.stack([target, 1 - target])
        (tp, fn), (fp, _) = torch.mm(labels, buffer.t()).tolist()
        denominator = 2 * tp + fp + fn
        ctx.factors = (-2 * (tp + fp + fn) / denominator ** 2 * scale, 2 * tp / denominator ** 2 * scale)
        ctx.save_for_backward(logits, target)
        return torch.full((), 1 - 2 * tp / denominator, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        logits, target = ctx.saved_tensors
        scale = grad.item()
        positive, negative = (factor * scale for factor in ctx.factors)
        tail = torch.abs(logits).neg_().sigmoid_()  # q = σ(−|z|)
        out = torch.mul(target, -negative).add_(negative).add_(target, alpha=positive)
        _SLOPE(out, tail, grad_input=out)  # · q(1 − q)
        _SLOPE(out, tail.mul_(MinimalF1.scale).sub_(MinimalF1.scale / 2).sigmoid_(), grad_input=out)  # · r(1 − r)
        return out, None


def candidates(floor: bool = False) -> dict:
    functions = {
        "bce": bce,
        "plain": plain_f1,
        "metricc": metricc.compile_metric("f1"),
        "metricc, validate=False": metricc.compile_metric("f1", validate=False),
        "metricc, running": metricc.compile_metric("f1", estimator="running", momentum=0.9),
    }
    if floor:
        functions["Function that sums"] = SumFunction.apply
        functions["minimal F1 Function"] = MinimalF1.apply
    return functions


def make_batch(n: int, dtype: torch.dtype, seed: int = 0):
    """Logits and 0/1 targets at 10 % prevalence, at least one positive (so F1 is defined)."""
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=generator) < 0.1).to(dtype)
    target[0] = 1.0
    logits = (torch.randn(n, generator=generator) + 2 * target - 1).to(dtype)
    return logits, target


def check(loss_fn, logits, target, dtype) -> None:
    """Refuse to time a loss whose value or gradient differs from the plain formula."""
    a = logits.detach().clone().requires_grad_(True)
    b = logits.detach().clone().requires_grad_(True)
    la, lb = loss_fn(a, target), plain_f1(b, target)
    la.backward()
    lb.backward()
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    if not (torch.allclose(la, lb, rtol=tolerance, atol=tolerance)
            and torch.allclose(a.grad, b.grad, rtol=tolerance * 10, atol=tolerance * 1e-2)):
        raise SystemExit(f"check failed: {la.item()} vs {lb.item()}, max grad difference "
                         f"{(a.grad - b.grad).abs().max().item():.3g}")


def block_seconds(loss_fn, logits, target, calls: int) -> float:
    """CPU seconds per forward+backward, averaged over ``calls`` calls."""
    x = logits.detach().requires_grad_(True)
    started = time.process_time()
    for _ in range(calls):
        loss_fn(x, target).backward()
    return (time.process_time() - started) / calls


def time_round_robin(functions: dict, logits, target, rounds: int, calls: int) -> tuple[dict, dict]:
    """Median CPU seconds per call of each candidate, and the median ratio to the first within a round."""
    for fn in functions.values():  # warm-up
        block_seconds(fn, logits, target, calls)
    samples = {name: [] for name in functions}
    ratios = {name: [] for name in functions}
    reference = next(iter(functions))
    for _ in range(rounds):
        this_round = {name: block_seconds(fn, logits, target, calls) for name, fn in functions.items()}
        for name, seconds in this_round.items():
            samples[name].append(seconds)
            ratios[name].append(seconds / this_round[reference])
    return ({name: statistics.median(values) for name, values in samples.items()},
            {name: statistics.median(values) for name, values in ratios.items()})


class OpCounter(TorchDispatchMode):
    """Counts the aten operations that reach the dispatcher (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(loss_fn, logits, target) -> collections.Counter:
    x = logits.detach().requires_grad_(True)
    loss_fn(x, target).backward()  # warm caches (constants, modules)
    x = logits.detach().requires_grad_(True)
    with OpCounter() as counter:
        loss_fn(x, target).backward()
    return counter.counts


def profile(loss_fn, logits, target, calls: int = 2000) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = logits.detach().requires_grad_(True)
    for _ in range(100):
        loss_fn(x, target).backward()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            loss_fn(x, target).backward()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--rounds", type=int, default=15, help="round-robin rounds per configuration")
    parser.add_argument("--calls", type=int, default=300, help="calls per candidate and round")
    parser.add_argument("--floor", action="store_true", help="also a summing Function and a minimal F1 Function")
    parser.add_argument("--ops", action="store_true", help="count aten operations per forward+backward")
    parser.add_argument("--profile", type=int, metavar="N", help="torch.profiler table of metricc at n = N, float64")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", metricc.MetricWarning)
    functions = candidates(args.floor)
    print("# Cost per call at small n: forward+backward, CPU time, one thread, medians over rounds")
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}; "
          f"{args.rounds} rounds x {args.calls} calls per candidate; ratios to BCE within a round\n")
    names = list(functions)
    print("| n | dtype | BCE µs | " + " | ".join(f"{name}" for name in names[1:]) + " |")
    print("|---:|---|---:|" + "---:|" * (len(names) - 1))
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for n in (int(s) for s in args.sizes.split(",")):
            logits, target = make_batch(n, dtype)
            checked = ("metricc", "metricc, validate=False") + (("minimal F1 Function",) if args.floor else ())
            for name in checked:  # the running loss's state is not the batch's
                check(functions[name], logits, target, dtype)
            seconds, ratios = time_round_robin(functions, logits, target, args.rounds, args.calls)
            rows.append({"n": n, "dtype": dtype_name, "us": {k: v * 1e6 for k, v in seconds.items()},
                         "ratio_to_bce": ratios})
            cells = " | ".join(f"{seconds[name] * 1e6:.0f} µs ({ratios[name]:.2f}x)" for name in names[1:])
            print(f"| {n} | {dtype_name} | {seconds['bce'] * 1e6:.0f} | {cells} |", flush=True)
    if args.ops:
        print("\n# aten operations per forward+backward (n = 256, float64)\n")
        logits, target = make_batch(256, torch.float64)
        for name in names:
            counts = count_ops(functions[name], logits, target)
            listing = ", ".join(f"{op} {k}" for op, k in counts.most_common())
            print(f"* {name}: {sum(counts.values())} ({listing})")
    if args.profile:
        logits, target = make_batch(args.profile, torch.float64)
        print(f"\n# torch.profiler, metricc f1, n = {args.profile}, float64\n")
        print(profile(functions["metricc"], logits, target))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
