"""Multi-class and multi-label losses: forward+backward CPU time against cross-entropy and BCE, and peak memory.

Issue 13's targets, at float32, N = 65,536 rows, C = 100 classes: multi-class macro-F1 (class-index targets)
at most 2× ``F.cross_entropy``, multi-label macro-F1 at most 1.5× ``binary_cross_entropy_with_logits`` on the
(N, C) logits, peak memory at most three N×C buffers (75 MiB here).

Timing is CPU time of this process (``time.process_time``) with one intra-op thread, so that other tenants of a
shared machine change it little; candidates run round-robin, interleaved, and medians and their ratios are
reported side by side from one run. Before timing, each compiled loss is checked against autograd through
the plain formula (values and gradients, float64, on a slice).

Peak memory is the high-water mark of resident memory (VmHWM, reset through /proc/self/clear_refs) above its
level just before one forward+backward, in a fresh subprocess per case, with glibc returning every large block
to the system on free (MALLOC_MMAP_THRESHOLD_), as ``bench_losses.py`` measures it. Linux only.

    python benchmarks/bench_multiclass.py                  # timing, the issue's configuration
    python benchmarks/bench_multiclass.py --memory         # and peak memory
    python benchmarks/bench_multiclass.py --profile        # and where the time goes (torch.profiler)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from bench_losses import peak_memory_after  # this folder: run as python benchmarks/bench_multiclass.py

import metricc

KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
# name: (task, metric, average, relaxation, target kind)
CASES = {
    "ce": ("multiclass", None, None, None, "index"),
    "mc-macro-f1": ("multiclass", "f1", "macro", "anyloss", "index"),
    "mc-micro-f1": ("multiclass", "f1", "micro", "anyloss", "index"),
    "mc-macro-f1-identity": ("multiclass", "f1", "macro", "identity", "index"),
    "mc-macro-f1-onehot": ("multiclass", "f1", "macro", "anyloss", "onehot"),
    "mc-proto-recompute": ("multiclass", "f1", "macro", "anyloss", "index"),
    "mc-proto-saved": ("multiclass", "f1", "macro", "anyloss", "index"),
    "mc-proto-identity": ("multiclass", "f1", "macro", "identity", "index"),
    "bce": ("multilabel", None, None, None, "labels"),
    "ml-macro-f1": ("multilabel", "f1", "macro", "anyloss", "labels"),
    "ml-micro-f1": ("multilabel", "f1", "micro", "anyloss", "labels"),
    "ml-macro-f1-identity": ("multilabel", "f1", "macro", "identity", "labels"),
    "ml-proto": ("multilabel", "f1", "macro", "anyloss", "labels"),
}
COMPILED = {"mc-macro-f1-compile": "mc-macro-f1", "mc-macro-f1-identity-compile": "mc-macro-f1-identity",
            "ml-macro-f1-compile": "ml-macro-f1"}  # compile=True variants, with --compile
CASES.update({name: CASES[base] for name, base in COMPILED.items()})
REFERENCE = {"multiclass": "ce", "multilabel": "bce"}


def make_batch(n: int, classes: int, kind: str, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator).to(dtype)
    if kind == "labels":
        target = (torch.rand(n, classes, generator=generator) < 0.05).to(dtype)
        return logits + 2 * target, target
    labels = torch.randint(0, classes, (n,), generator=generator)
    logits[torch.arange(n), labels] += 2.0
    if kind == "onehot":
        return logits, F.one_hot(labels, classes).to(dtype)
    return logits, labels


def build(name: str, classes: int, validate: bool = True):
    task, metric, average, relaxation, _ = CASES[name]
    if name == "ce":
        return F.cross_entropy
    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "ml-proto":
        return PrototypeMultilabel(metric, classes, average)
    if name.startswith("mc-proto"):
        return PrototypeMulticlass(metric, classes, average, relaxation, saved=name.endswith("saved"))
    return metricc.compile_metric(metric, task=task, num_classes=classes, average=average, relaxation=relaxation,
                                  validate=validate, compile=name in COMPILED)


def plain(name: str):
    """The loss written the obvious way (one-hot rows, four sums, F1 per class, the average); autograd."""
    task, _, average, relaxation, _ = CASES[name]

    def loss(logits, target):
        classes = logits.shape[1]
        y = F.one_hot(target, classes).to(logits.dtype) if target.dim() == 1 else target
        if task == "multiclass":
            p = torch.softmax(logits, 1)
            yhat = torch.softmax(73.0 / 2 * p, 1) if relaxation == "anyloss" else p
        else:
            p = torch.sigmoid(logits)
            yhat = torch.sigmoid(73.0 * (p - 0.5)) if relaxation == "anyloss" else p
        tp, fn, fp = (y * yhat).sum(0), (y * (1 - yhat)).sum(0), ((1 - y) * yhat).sum(0)
        if average == "micro":
            tp, fn, fp = tp.sum(), fn.sum(), fp.sum()
        return 1 - (2 * tp / (2 * tp + fp + fn)).mean()

    return loss


# --- prototypes of a leaner multi-class runtime path (proposals for the lead; see docs/multiclass.md) -----------
#
# Class-index targets, the softmax amplifier ŷ = softmax(L/2·softmax(z)) or the identity ŷ = softmax(z). The
# table uses the runtime's invariants (each entry a direct sum; 1 − ŷ never by cancellation) with fewer passes:
#   * off its row's top class ŷ ≤ 1/2 (the top's e is exactly 1 ≥ e_c, so ŷ_c = e_c/(1 + s) ≤ 1/2), hence
#     1 − ŷ ≥ 1/2 there and Σ(1 − ŷ) over such entries = count − Σ ŷ cannot cancel: no complement buffer;
#   * the top class's complement is s/(1 + s), s the row sum of the others (the top's e scattered to 0);
#   * column sums of ŷ = e/(1 + s) are one matrix-vector product eᵀ·(1/(1 + s)): no division pass;
#   * torch.softmax's fused kernel, and the row max by amax (about 8× faster than max with indices here).
# Backward, through both softmax Jacobians with matrix-vector products for ⟨ŷ, g⟩ (g is one value per class
# except at the own class) and one row dot product ⟨p, h⟩. "saved" keeps p and ŷ from the forward (two N×C
# buffers held until the backward) instead of recomputing two softmaxes.


BLOCK_ELEMENTS = 1 << 20  # as the runtime's CHUNK_ELEMENTS: blocks of rows stay in cache between passes


def row_blocks(n, classes):
    step = max(1, BLOCK_ELEMENTS // classes)
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def prototype_table(z, y, scale):
    """(4, C) entries TP, FN, FP, TN of class-index targets, summed over blocks of rows."""
    return sum(block_table(z[rows], y[rows], scale) for rows in row_blocks(*z.shape))


def block_table(z, y, scale):
    n, classes = z.shape
    rows = torch.arange(n, device=z.device)
    if scale is None:
        p, a = None, torch.sub(z, z.amax(1, keepdim=True))
    else:
        p = torch.softmax(z, 1)
        a = torch.mul(p, scale / 2)
        a.sub_(a.amax(1, keepdim=True))
    e = a.exp_()  # the largest entry of each row is exactly 1
    top = e.argmax(1)
    e[rows, top] = 0.0
    others = e.sum(1)
    inverse = others.add(1).reciprocal_()
    own_is_top = top == y
    own = e[rows, y] * inverse
    own_yhat = torch.where(own_is_top, inverse, own)
    own_complement = torch.where(own_is_top, others * inverse, 1 - own)  # 1 − ŷ ≥ 1/2 off the top
    e[rows, y] = 0.0
    column = torch.mv(e.t(), inverse)  # Σ ŷ over entries neither own nor top, each ≤ 1/2
    count = (n - torch.bincount(y, minlength=classes) - torch.bincount(top, minlength=classes)
             + torch.bincount(y[own_is_top], minlength=classes)).to(z.dtype)
    away = ~own_is_top
    zeros = z.new_zeros(classes)
    tp = zeros.index_add(0, y, own_yhat)
    fn = zeros.index_add(0, y, own_complement)
    fp = column.index_add(0, top[away], inverse[away])
    tn = (count - column).index_add_(0, top[away], (others * inverse)[away])
    return torch.stack([tp, fn, fp, tn])


def prototype_gradient(z, y, positive, negative, scale, p=None, yhat=None):
    """∂loss/∂z given the per-class factors (already times the incoming gradient), block by block."""
    grad = torch.empty_like(z)
    for rows in row_blocks(*z.shape):
        kept = () if p is None else (p[rows], yhat[rows])
        grad[rows] = block_gradient(z[rows], y[rows], positive, negative, scale, *kept)
    return grad


def block_gradient(z, y, positive, negative, scale, p=None, yhat=None):
    rows = torch.arange(z.shape[0], device=z.device)
    if yhat is None:
        p = torch.softmax(z, 1)
        yhat = p if scale is None else torch.softmax(p * (scale / 2), 1)
    if scale is not None:
        positive, negative = positive * (scale / 2), negative * (scale / 2)
    own = yhat[rows, y]
    step = (positive - negative)[y]
    inner = torch.mv(yhat, negative).addcmul_(own, step)  # ⟨ŷ, g⟩ per row
    h = torch.sub(negative, inner.unsqueeze(1)).mul_(yhat)  # ŷ ⊙ (g − ⟨ŷ, g⟩) off the own class
    h[rows, y] = own * (positive[y] - inner)
    if scale is None:
        return h
    dot = torch.linalg.vecdot(p, h, dim=1)
    return h.sub_(dot.unsqueeze(1)).mul_(p)


class _PrototypeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, loss_fn, scale, saved):
        from metricc.runtime import evaluate

        table = prototype_table(z, y, scale)
        loss, factors = evaluate(loss_fn.plan, table.unsqueeze(2))
        if saved:
            p = torch.softmax(z, 1)
            yhat = p if scale is None else torch.softmax(p * (scale / 2), 1)
            ctx.save_for_backward(z, y, factors, p, yhat)
        else:
            ctx.save_for_backward(z, y, factors)
        ctx.scale = scale
        return loss

    @staticmethod
    def backward(ctx, grad):
        z, y, factors, *kept = ctx.saved_tensors
        positive, negative = (factors[:, :, 0] * grad).unbind(0)
        return prototype_gradient(z, y, positive, negative, ctx.scale, *kept), None, None, None, None


class PrototypeMulticlass:
    """The prototype path for class-index targets; the metric, its average and zero_division come from the
    runtime's ``evaluate`` of a compiled loss (only the statistics and the backward are re-written)."""

    def __init__(self, metric, classes, average, relaxation, saved=False):
        self.loss_fn = metricc.compile_metric(metric, task="multiclass", num_classes=classes, average=average,
                                              relaxation=relaxation)
        self.scale = None if relaxation == "identity" else 73.0
        self.saved = saved

    def __call__(self, z, y):
        return _PrototypeFunction.apply(z, y, self.loss_fn, self.scale, self.saved)


# Multi-label with the amplifier at threshold 1/2: the runtime's binary one-column path, per column, on blocks of
# rows: ŷ and 1 − ŷ as σ(±L·(p − 1/2)); TP = Σ y·ŷ, then ŷ − y·ŷ in place for FP (exact for 0/1 labels); the same
# for FN and TN; backward: the label's factor per column (y·(g+ − g−) + g−, vectors broadcast along rows), times
# dp/dz and the amplifier's slope, both from q = σ(−|z|) by sigmoid_backward. No (label, prediction) products of
# stacked blocks, no one-hot label blocks.


def multilabel_block_table(z, y, scale):
    a = torch.sigmoid(z).mul_(scale).sub_(scale / 2)
    complement = torch.neg(a).sigmoid_()
    predicted = a.sigmoid_()
    product = torch.mul(predicted, y)
    tp = product.sum(0)
    fp = predicted.sub_(product).sum(0)
    torch.mul(complement, y, out=product)
    fn = product.sum(0)
    tn = complement.sub_(product).sum(0)
    return torch.stack([tp, fn, fp, tn])


def multilabel_block_gradient(z, y, positive, negative, scale):
    tail = torch.abs(z).neg_().sigmoid_()  # q = min(p, 1 − p)
    grad = torch.mul(y, positive - negative).add_(negative)
    grad = torch.ops.aten.sigmoid_backward.grad_input(grad, tail, grad_input=grad)  # · q(1 − q) = dp/dz
    slope = tail.sub_(0.5).mul_(scale).sigmoid_()  # r = σ(L·(q − 1/2)): the amplifier's slope is L·r·(1 − r)
    return torch.ops.aten.sigmoid_backward.grad_input(grad, slope, grad_input=grad)


class _PrototypeMultilabelFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, loss_fn, scale):
        from metricc.runtime import evaluate

        table = sum(multilabel_block_table(z[rows], y[rows], scale) for rows in row_blocks(*z.shape))
        loss, factors = evaluate(loss_fn.plan, table.unsqueeze(2))
        ctx.save_for_backward(z, y, factors)
        ctx.scale = scale
        return loss

    @staticmethod
    def backward(ctx, grad):
        z, y, factors = ctx.saved_tensors
        positive, negative = (factors[:, :, 0] * (grad * ctx.scale)).unbind(0)
        out = torch.empty_like(z)
        for rows in row_blocks(*z.shape):
            out[rows] = multilabel_block_gradient(z[rows], y[rows], positive, negative, ctx.scale)
        return out, None, None, None


class PrototypeMultilabel:
    def __init__(self, metric, classes, average):
        self.loss_fn = metricc.compile_metric(metric, task="multilabel", num_classes=classes, average=average)

    def __call__(self, z, y):
        return _PrototypeMultilabelFunction.apply(z, y, self.loss_fn, 73.0)


def check(name: str, classes: int) -> None:
    """Refuse to time a loss whose value or gradient differs from the plain formula (float64, 2,048 rows)."""
    logits, target = make_batch(2048, classes, CASES[name][4], torch.float64, seed=1)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    la, lb = build(name, classes)(a, target), plain(name)(b, target)
    la.backward()
    lb.backward()
    if not (torch.allclose(la, lb, rtol=1e-9, atol=1e-12) and torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-13)):
        raise SystemExit(f"{name}: value check failed ({la.item()} vs {lb.item()}, largest gradient difference "
                         f"{(a.grad - b.grad).abs().max().item():.3g})")


def forward_backward(loss_fn, logits, target) -> float:
    x = logits.detach().requires_grad_(True)
    started = time.process_time()
    loss_fn(x, target).backward()
    return time.process_time() - started


def time_round_robin(names, n, classes, rounds, validate=True) -> dict[str, list[float]]:
    batches = {name: make_batch(n, classes, CASES[name][4]) for name in names}
    functions = {name: build(name, classes, validate) for name in names}
    for name in names:  # warm-up
        forward_backward(functions[name], *batches[name])
    samples = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            samples[name].append(forward_backward(functions[name], *batches[name]))
    return samples


def peak_memory_bytes(name: str, n: int, classes: int) -> int:
    return peak_memory_after(f"""
torch.set_num_threads(1)
from bench_multiclass import CASES, build, make_batch, forward_backward
fn = build({name!r}, {classes})
forward_backward(fn, *make_batch(512, {classes}, CASES[{name!r}][4]))  # load kernels
logits, target = make_batch({n}, {classes}, CASES[{name!r}][4])
logits.requires_grad_(True)
""")


def profile(name: str, n: int, classes: int, repeats: int = 5) -> str:
    """torch.profiler's table of one loss's forward+backward, by operator, self CPU time, and the element count
    of each operator's first input (how many N×C passes it makes)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profile

    fn = build(name, classes)
    logits, target = make_batch(n, classes, CASES[name][4])
    forward_backward(fn, logits, target)
    with run_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            forward_backward(fn, logits, target)
    return prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30,
                                                              max_name_column_width=40, max_shapes_column_width=40)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=25, help="round-robin rounds (medians over these)")
    parser.add_argument("--cases", default=",".join(c for c in CASES if c not in COMPILED),
                        help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--compile", action="store_true", help="also time compile=True (torch.compile) variants")
    parser.add_argument("--no-validate", action="store_true", help="compiled losses skip their input checks")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (subprocess per case)")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler tables")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--keep-memory", action="store_true",
                        help="re-run with glibc keeping freed blocks up to 64 MB (no page faults per fresh N×C buffer)")
    args = parser.parse_args(argv)
    keeping = all(os.environ.get(k) == v for k, v in KEEP_MEMORY.items())
    if args.keep_memory and not keeping:  # glibc reads these once, at process start
        arguments = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *arguments],
                  {**os.environ, **KEEP_MEMORY})
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", metricc.MetricWarning)
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    if args.compile:
        names += [name for name in COMPILED if name not in names]
    for task, reference in REFERENCE.items():
        if any(CASES[name][0] == task for name in names) and reference not in names:
            names.insert(0, reference)
    for name in names:
        if CASES[name][1] is not None:
            check(name, 7)
    print("# multi-class / multi-label losses: forward+backward CPU time (one thread), median over "
          f"{args.rounds} interleaved rounds")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, python "
          f"{platform.python_version()}; N = {args.n}, C = {args.classes}, float32; input checks "
          f"{'off' if args.no_validate else 'on'}; allocator: "
          f"{'glibc keeping freed blocks up to 64 MB' if keeping else 'glibc defaults'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    samples = time_round_robin(names, args.n, args.classes, args.rounds, not args.no_validate)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    buffer = args.n * args.classes * 4
    header = "| case | median ms | ratio to its reference | round-by-round ratio, quartiles |"
    header += " peak memory MiB (N×C buffers) |" if args.memory else ""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for name in names:
        reference = REFERENCE[CASES[name][0]]
        per_round = sorted(a / b for a, b in zip(samples[name], samples[reference]))
        quartiles = statistics.quantiles(per_round, n=4) if len(per_round) >= 2 else per_round * 3
        row = {"case": name, "median_ms": medians[name] * 1e3, "ratio": medians[name] / medians[reference],
               "ratio_quartiles": [quartiles[0], quartiles[2]]}
        line = (f"| {name} | {row['median_ms']:.1f} | {row['ratio']:.2f}× | {quartiles[0]:.2f}–{quartiles[2]:.2f} |")
        if args.memory:
            peak = peak_memory_bytes(name, args.n, args.classes)
            row["peak_mib"] = peak / 2**20
            line += f" {peak / 2**20:.1f} ({peak / buffer:.2f}) |"
        rows.append(row)
        print(line, flush=True)
    print(f"\nOne N×C float32 buffer: {buffer / 2**20:.1f} MiB; the target, three: {3 * buffer / 2**20:.1f} MiB.")
    if args.profile:
        for name in names:
            if CASES[name][1] is not None and name in ("mc-macro-f1", "ml-macro-f1"):
                print(f"\n## {name}\n")
                print(profile(name, args.n, args.classes))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
