"""The runtime's cost in every case of issues 23 and 24, with the alternatives, in one run.

Each case times forward+backward of a reference loss (the one a user would otherwise call: BCE, CE or
MONAI's Dice), metricc, and the alternatives: autograd through the plain formula, ``torch.compile`` of it,
a hand-written floor, and optionally the previous runtime (``--previous DIR``: standalone modules written by
an older ``metricc compile``, imported side by side). Candidates run round-robin; each round times a block of
calls of every candidate in turn, and each ratio is the median over rounds of the ratio to the reference
within the round (candidates of a round ran under the same load). Before timing, metricc's value and gradient
are checked against the plain formula or MONAI, so no speed can come from a wrong result.

    python benchmarks/bench_runtime.py                          # every case, 1 and 2 threads
    python benchmarks/bench_runtime.py --cases dense --memory   # the dense cases and their peak memory
    python benchmarks/bench_runtime.py --previous /tmp/previous # with the runtime before, side by side

``--previous DIR`` reads f1.py, f1_thresholds.py, f1_multiclass.py, f1_multilabel.py and dice_multiclass.py
written by the older version: ``metricc compile f1 --standalone -o DIR/f1.py``; ``--thresholds
0.1,0.2,...,0.9`` for f1_thresholds.py; ``--task multiclass --num-classes 100`` and ``--task multilabel
--num-classes 100`` for the next two; ``metricc compile dice --task multiclass --num-classes 4`` for the last
(the previous runtime took dense input only reshaped to (N·H·W, C), as a user had to).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_small import MinimalF1, plain_f1  # noqa: E402

import metricc  # noqa: E402

THRESHOLDS = [round(0.1 * k, 1) for k in range(1, 10)]
CLOCK = time.perf_counter  # process_time with one thread: other processes on a shared machine count less
DEVICE = "cpu"


# ---------------------------------------------------------------------------------------------
# Batches and plain formulas (autograd differentiates them)


def binary_batch(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(shape, generator=generator) < 0.2).float()
    logits = torch.randn(shape, generator=generator) + 2 * target - 1
    return logits, target


def class_batch(n, classes, seed=0, spatial=()):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n, *spatial), generator=generator)
    logits = torch.randn(n, classes, *spatial, generator=generator)
    return logits, labels


def label_batch(n, labels, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, labels, generator=generator) < 0.1).float()
    return torch.randn(n, labels, generator=generator) + 2 * target - 1, target


def plain_f1_thresholds(logits, target):
    p = torch.sigmoid(logits)
    total = 0
    for t in THRESHOLDS:
        yhat = torch.sigmoid(73.0 * (p - t))
        tp, fn, fp = (target * yhat).sum(), (target * (1 - yhat)).sum(), ((1 - target) * yhat).sum()
        total = total + (1 - 2 * tp / (2 * tp + fp + fn))
    return total / len(THRESHOLDS)


def plain_multiclass_f1(logits, labels):
    p = torch.softmax(logits, 1)
    y = F.one_hot(labels, logits.shape[1]).to(p.dtype)
    tp, fp, fn = (y * p).sum(0), ((1 - y) * p).sum(0), (y * (1 - p)).sum(0)
    return (1 - 2 * tp / (2 * tp + fp + fn)).mean()


def plain_multilabel_f1(logits, target):
    yhat = torch.sigmoid(73.0 * (torch.sigmoid(logits) - 0.5))
    tp, fp, fn = (target * yhat).sum(0), ((1 - target) * yhat).sum(0), (target * (1 - yhat)).sum(0)
    return (1 - 2 * tp / (2 * tp + fp + fn)).mean()


def plain_dense_dice(logits, labels, per_image=False):
    p = torch.softmax(logits, 1)
    y = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = (2, 3) if per_image else (0, 2, 3)
    tp, fp, fn = (y * p).sum(dims), ((1 - y) * p).sum(dims), (y * (1 - p)).sum(dims)
    return (1 - 2 * tp / (2 * tp + fp + fn)).mean()


def plain_binary_dice(logits, target, amplifier=True):
    yhat = torch.sigmoid(logits)
    if amplifier:
        yhat = torch.sigmoid(73.0 * (yhat - 0.5))
    tp, fp, fn = (target * yhat).sum(), ((1 - target) * yhat).sum(), (target * (1 - yhat)).sum()
    return 1 - 2 * tp / (2 * tp + fp + fn)


def plain_binary_dice_identity(logits, target):
    return plain_binary_dice(logits, target, amplifier=False)


def with_runtime(loss_fn, **constants):
    """loss_fn with module-level runtime settings changed during the call: what a twin or shortcut saves."""
    runtime = metricc.runtime

    def call(z, y):
        saved = {name: getattr(runtime, name) for name in constants}
        for name, value in constants.items():
            setattr(runtime, name, value)
        try:
            return loss_fn(z, y)
        finally:
            for name, value in saved.items():
                setattr(runtime, name, value)

    return call


def load_previous(directory, name):
    """The older runtime's standalone module DIR/name.py, or None."""
    if directory is None:
        return None
    path = os.path.join(directory, f"{name}.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"previous_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_class(module):
    return next(getattr(module, n) for n in dir(module) if n.endswith("Loss") and n not in ("MetricLoss",)
                and isinstance(getattr(module, n), type))


# ---------------------------------------------------------------------------------------------
# The cases: (title, target, batch, {candidate: loss}, reference oracle for the check)


def monai_dice(monai, reduce):
    """MONAI's DiceLoss(softmax=True) on class indices (N, H, W), or None without MONAI."""
    if monai is None:
        return None
    loss = monai(softmax=True, to_onehot_y=True, batch=reduce == "batch")
    return lambda z, y: loss(z, y.unsqueeze(1))


def cases(previous_dir, names):
    monai = None
    try:
        from monai.losses import DiceLoss as monai  # noqa: N813
    except ImportError:
        pass
    previous = {name: load_previous(previous_dir, name) for name in
                ("f1", "f1_thresholds", "f1_multiclass", "f1_multilabel", "dice_multiclass")}

    def old(name, **options):
        module = previous[name]
        return None if module is None else loss_class(module)(**options)

    bce = F.binary_cross_entropy_with_logits
    out = []
    if "binary" in names:
        for n in (1_000_000, 256):
            label = "1e6" if n > 1000 else str(n)
            out.append((f"binary F1, n = {label}, eager", "≤ 1.3× BCE" if n > 1000 else "≤ 2.5× BCE",
                        lambda n=n: binary_batch((n,)), {
                            "BCE": bce,
                            "metricc": metricc.compile_metric("f1"),
                            "plain formula": plain_f1,
                            **({"floor: minimal F1 Function": MinimalF1.apply} if n < 1000 else {}),
                            "previous runtime": old("f1"),
                            "without the float evaluation": with_runtime(metricc.compile_metric("f1"),
                                                                         SCALAR_PATH_COLUMNS=0),
                            "with the other batch size's forms": with_runtime(
                                metricc.compile_metric("f1"), SMALL_ELEMENTS=1 << 62 if n > 1000 else 0),
                            "through Function.apply": with_runtime(
                                metricc.compile_metric("f1"),
                                _FAST_APPLY=metricc.runtime._MetricLossFunction.apply),
                        }, plain_f1))
            out.append((f"binary F1, n = {label}, compile=True",
                        "≤ 1.0× BCE" if n > 1000 else "≤ torch.compile(plain)",
                        lambda n=n: binary_batch((n,)), {
                            "BCE": bce,
                            "metricc compile=True": metricc.compile_metric("f1", compile=True),
                            "torch.compile(plain)": torch.compile(plain_f1),
                            "metricc eager": metricc.compile_metric("f1"),
                            "previous compile=True": old("f1", compile=True),
                        }, plain_f1))
    if "thresholds" in names:
        out.append(("9 thresholds, compiled, n = 1e6", "≤ 3× BCE", lambda: binary_batch((1_000_000,)), {
            "BCE": bce,
            "metricc compile=True": metricc.compile_metric("f1", thresholds=THRESHOLDS, compile=True),
            "torch.compile(plain)": torch.compile(plain_f1_thresholds),
            "metricc eager": metricc.compile_metric("f1", thresholds=THRESHOLDS),
            "previous compile=True": old("f1_thresholds", compile=True),
        }, plain_f1_thresholds))
    if "classes" in names:
        out.append(("multi-class macro F1, 65,536 × 100", "≤ 1.5× CE", lambda: class_batch(65536, 100), {
            "CE": F.cross_entropy,
            "metricc": metricc.compile_metric("f1", task="multiclass", num_classes=100),
            "plain formula": plain_multiclass_f1,
            "previous runtime": old("f1_multiclass"),
        }, plain_multiclass_f1))
        out.append(("multi-label macro F1, 65,536 × 100", "≤ 1.5× BCE", lambda: label_batch(65536, 100), {
            "BCE": bce,
            "metricc": metricc.compile_metric("f1", task="multilabel", num_labels=100),
            "plain formula": plain_multilabel_f1,
            "previous runtime": old("f1_multilabel"),
            "floor: metricc compile=True": metricc.compile_metric("f1", task="multilabel", num_labels=100,
                                                                  compile=True),
        }, plain_multilabel_f1))
    if "dense" in names:
        shape = dict(n=8, classes=4, spatial=(256, 256))
        for reduce in ("batch", "image"):
            reference = monai_dice(monai, reduce)
            previous_dice = old("dice_multiclass")
            out.append((f"dense macro Dice (8, 4, 256, 256), reduce={reduce!r}",
                        "≤ 1.0× MONAI, ≤ 2× CE", lambda: class_batch(**shape), {
                            "MONAI DiceLoss(softmax=True)": reference,
                            "CE": F.cross_entropy,
                            "metricc": metricc.compile_metric("dice", task="multiclass", num_classes=4,
                                                              reduce=reduce),
                            "plain formula": lambda z, y, r=reduce: plain_dense_dice(z, y, r == "image"),
                            **({"previous runtime, reshaped to (N·H·W, C)":
                                lambda z, y, f=previous_dice: f(z.movedim(1, -1).reshape(-1, 4), y.reshape(-1))}
                               if previous_dice is not None and reduce == "batch" else {}),
                        }, lambda z, y, r=reduce: plain_dense_dice(z, y, r == "image")))
        out.append(("dense binary Dice (8, 1, 512, 512)", "≤ 1.2× BCE", lambda: binary_batch((8, 1, 512, 512)), {
            "BCE": bce,
            "metricc": metricc.compile_metric("dice"),
            "metricc, identity": (metricc.compile_metric("dice", relaxation="identity"), plain_binary_dice_identity),
            "MONAI DiceLoss(sigmoid=True)": monai(sigmoid=True) if monai else None,
            "plain formula": plain_binary_dice,
            "floor: metricc compile=True": metricc.compile_metric("dice", compile=True),
        }, plain_binary_dice))
    return out


# ---------------------------------------------------------------------------------------------
# Timing


def forward_backward(loss_fn, logits, target):
    z = logits.detach().requires_grad_(True)
    loss_fn(z, target).backward()
    if z.is_cuda:
        torch.cuda.synchronize()  # the time of the work, not of its launch
    return z.grad


def check(name, loss_fn, oracle, logits, target):
    """Refuse to time a loss whose value or gradient differs from the oracle's (float32 tolerances)."""
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    got, expected = loss_fn(a, target), oracle(b, target)
    got.backward()
    expected.backward()
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5) or \
            not torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6 * b.grad.abs().max().item()):
        raise SystemExit(f"{name}: metricc differs from the plain formula ({got.item()} vs {expected.item()})")


def time_case(candidates, make, rounds, block_seconds):
    logits, target = make()
    logits, target = logits.to(DEVICE), target.to(DEVICE)
    calls = {}
    for name, fn in candidates.items():  # warm up (and compile), and size each block
        for _ in range(2):
            forward_backward(fn, logits, target)
        start = CLOCK()
        forward_backward(fn, logits, target)
        calls[name] = max(1, int(block_seconds / max(CLOCK() - start, 1e-6)))
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = CLOCK()
            for _ in range(calls[name]):
                forward_backward(fn, logits, target)
            samples[name].append((CLOCK() - start) / calls[name])
    reference = next(iter(candidates))
    return {name: (statistics.median(times),
                   statistics.median(t / r for t, r in zip(times, samples[reference])))
            for name, times in samples.items()}


def peak_buffers(case_title, candidate, setup):
    """Peak memory of one forward+backward above the level before it, in input-sized buffers."""
    from bench_losses import peak_memory_after

    code = f"""
from bench_runtime import cases
case = next(c for c in cases(None, {{"dense"}}) if c[0] == {case_title!r})
fn = case[3][{candidate!r}]
fn = fn[0] if isinstance(fn, tuple) else fn
logits, target = case[2]()
fn(logits.clone().requires_grad_(True), target).backward()
logits.requires_grad_(True)
"""
    return peak_memory_after(setup + code) / (4 * 8 * 4 * 256 * 256 if "(8, 4" in case_title else 4 * 8 * 512 * 512)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--block", type=float, default=0.05, help="seconds per block of calls (default 0.05)")
    parser.add_argument("--cases", default="binary,thresholds,classes,dense",
                        help="binary, thresholds, classes, dense (comma-separated)")
    parser.add_argument("--previous", default=None, help="folder of the older runtime's standalone modules")
    parser.add_argument("--memory", action="store_true", help="peak memory of the dense cases (fresh processes)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: batches on that device, wall time")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    names = set(args.cases.split(","))
    threads = [int(t) for t in args.threads.split(",")]
    table = {}
    global CLOCK, DEVICE
    DEVICE = args.device
    for count in threads:
        torch.set_num_threads(count)
        CLOCK = time.process_time if count == 1 and DEVICE == "cpu" else time.perf_counter
        for title, target, make, candidates, oracle in cases(args.previous, names):
            candidates = {k: v for k, v in candidates.items() if v is not None}
            own = {k: v[1] for k, v in candidates.items() if isinstance(v, tuple)}  # a candidate's own oracle
            candidates = {k: v[0] if isinstance(v, tuple) else v for k, v in candidates.items()}
            logits, labels = (t.to(DEVICE) for t in make())
            for name, fn in candidates.items():
                if name.startswith(("metricc", "previous")):
                    check(f"{title}: {name}", fn, own.get(name, oracle), logits, labels)
            for name, (seconds, ratio) in time_case(candidates, make, args.rounds, args.block).items():
                table.setdefault((title, target), {}).setdefault(name, {})[count] = (seconds, ratio)
            print(f"[{count} thread{'s' if count > 1 else ''}] {title}: done", file=sys.stderr)
    print(f"torch {torch.__version__}, float32, forward+backward; median time, and ratio to the first row "
          f"(median of per-round ratios, {args.rounds} rounds)\n")
    print("| case | candidate | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads)
          + " | target |")
    print("|---|---|" + "---:|" * len(threads) + "---|")
    for (title, target), rows in table.items():
        for index, (name, by_threads) in enumerate(rows.items()):
            cells = [f"{by_threads[t][0] * 1e3:.3f} ms ({by_threads[t][1]:.2f}×)" for t in threads]
            print(f"| {title if index == 0 else ''} | {name} | " + " | ".join(cells)
                  + f" | {target if index == 0 else ''} |")
    if args.memory:
        print("\nPeak memory of one forward+backward above the level before it, in input-sized buffers:\n")
        setup = "torch.set_num_threads(1)\n"
        for title in ("dense macro Dice (8, 4, 256, 256), reduce='batch'",
                      "dense macro Dice (8, 4, 256, 256), reduce='image'", "dense binary Dice (8, 1, 512, 512)"):
            case = next(c for c in cases(None, {"dense"}) if c[0] == title)
            for candidate, fn in case[3].items():
                if fn is not None and not candidate.startswith(("previous", "plain", "floor")):
                    print(f"| {title} | {candidate} | {peak_buffers(title, candidate, setup):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
