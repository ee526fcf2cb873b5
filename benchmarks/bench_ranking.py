"""Cost per call of the AUROC losses: forward+backward CPU time against BCE-with-logits and the pairwise surrogates.

Candidates, at n = 1e3 … 1e6 samples (10 % positives, float32 logits by default):

* ``bce``: ``binary_cross_entropy_with_logits``, the unit;
* ``auroc T=9 / 19 / 33``: ``metricc.compile_metric("auroc")`` (AnyLoss sigmoid relaxation) on the grid
  k/(T+1), k = 1 … T; T = 19 is the default grid 0.05 … 0.95;
* ``wmw all pairs``: the sigmoid WMW surrogate over every (positive, negative) pair, O(n₊·n₋) time and
  memory; run only while n₊·n₋ ≤ ``--max-all-pairs`` (default 1e8: its pair tensors then hold a few GB at
  most), else reported as skipped;
* ``wmw 65,536 pairs``: the same surrogate over 65,536 pairs drawn per call (the experiments' default
  beyond that many pairs), O(n) for the split plus a constant;
* ``wmw-hinge sorted``: the squared-hinge WMW surrogate over all pairs in O(n log n) (sort, suffix sums);
* ``auc-m``: LibAUC's AUC-M loss (v2) with its variables, O(n).

CPU time of the process (``time.process_time``) with one intra-op thread, so the numbers do not depend on
what else runs on the machine; candidates run round-robin (one call each per round), and the table reports
medians and ratios to BCE's median from the same run.

    python benchmarks/bench_ranking.py                   # n = 1e3, 1e4, 1e5, 1e6
    python benchmarks/bench_ranking.py --sizes 1000 --budget 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import metricc
from metricc.experiments.ranking import AUCMarginLoss, PairwiseSigmoidLoss, PairwiseSquaredHingeLoss

GRIDS = (9, 19, 33)


def make_batch(n: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=generator) < 0.1).to(dtype)
    logits = (torch.randn(n, generator=generator) + 2 * target - 1).to(dtype)
    return logits, target


def candidates(n_pairs: int, max_all_pairs: float) -> dict:
    """name → loss function, or None where the candidate is skipped at this size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = {f"auroc T={t}": metricc.compile_metric("auroc", thresholds=[k / (t + 1) for k in range(1, t + 1)])
                    for t in GRIDS}
    return {
        "bce": F.binary_cross_entropy_with_logits,
        **compiled,
        "wmw all pairs": PairwiseSigmoidLoss(max_pairs=n_pairs) if n_pairs <= max_all_pairs else None,
        "wmw 65,536 pairs": PairwiseSigmoidLoss(max_pairs=1 << 16),
        "wmw-hinge sorted": PairwiseSquaredHingeLoss(),
        "auc-m": AUCMarginLoss(),
    }


def forward_backward(loss_fn, logits, target) -> float:
    x = logits.detach().requires_grad_(True)
    started = time.process_time()
    loss_fn(x, target).backward()
    return time.process_time() - started


def time_side_by_side(functions: dict, logits, target, budget: float, min_rounds: int = 5,
                      max_rounds: int = 400) -> dict:
    """Median CPU seconds per forward+backward of each function, measured round-robin."""
    for _ in range(3):  # warm-up: allocator pools, autograd's first graphs, the compiled modules' caches
        for fn in functions.values():
            forward_backward(fn, logits, target)
    samples = {name: [] for name in functions}
    started, rounds = time.process_time(), 0
    while rounds < min_rounds or (time.process_time() - started < budget and rounds < max_rounds):
        for name, fn in functions.items():
            samples[name].append(forward_backward(fn, logits, target))
        rounds += 1
    return {name: statistics.median(values) for name, values in samples.items()}, rounds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--budget", type=float, default=20.0, help="CPU seconds of timing per size (default 20)")
    parser.add_argument("--max-all-pairs", type=float, default=1e8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows, names = [], None
    for n in sizes:
        logits, target = make_batch(n, dtype)
        positives = int(target.sum())
        pairs = positives * (n - positives)
        functions = candidates(pairs, args.max_all_pairs)
        names = names or list(functions)
        running = {name: fn for name, fn in functions.items() if fn is not None}
        medians, rounds = time_side_by_side(running, logits, target, args.budget)
        rows.append((n, pairs, rounds, {name: medians.get(name) for name in functions}))
        print(f"n={n}: {rounds} rounds", file=sys.stderr, flush=True)
    print(f"Forward+backward, median CPU time per call (one thread), {args.dtype}, 10 % positives; "
          f"ratio to BCE in the same run. {platform.machine()}, torch {torch.__version__}, "
          f"{platform.python_version()}.\n")
    print("| n | pairs | " + " | ".join(names) + " |")
    print("|---:|---:|" + "---:|" * len(names))
    for n, pairs, _, medians in rows:
        unit = medians["bce"]
        cells = []
        for name in names:
            seconds = medians[name]
            if seconds is None:
                cells.append("skipped")
            elif name == "bce":
                cells.append(f"{seconds * 1e3:.3g} ms")
            else:
                cells.append(f"{seconds * 1e3:.3g} ms ({seconds / unit:.3g}x)")
        print(f"| {n:.0e} | {pairs:.2g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
