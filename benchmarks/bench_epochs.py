"""Time per training epoch with each loss, as a ratio to BCE (the AnyLoss paper's Table 8).

SLP: one full-batch gradient step per epoch; MLP: mini-batches of 5 % of the data
(Adam), on the `random` dataset (10,000 × 2, 9:1). Epochs of all losses are run
round-robin in one process (each round starting at the next loss) so that machine load
affects them alike; each epoch's time is divided by BCE's epoch of the same round, and
the medians of these ratios are reported. ``--cpu-time`` measures the process's CPU time instead of wall-clock
time (less sensitive to other processes on a shared machine); ``--threads`` sets
torch's intra-op threads; ``--running`` adds each compiled loss with the running
estimator (momentum 0.9). Needs the experiments extra (scikit-learn).

    python benchmarks/bench_epochs.py [--epochs 40] [--losses bce,mse,f1,gmean,balanced_accuracy,sol-f1]
    python benchmarks/bench_epochs.py --losses bce,f1 --running --cpu-time --threads 1 --epochs 60
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

import metricc
from metricc.experiments.datasets import load_dataset
from metricc.experiments.losses import build_loss, parse_losses
from metricc.experiments.models import build_model


def epoch_runner(model_name: str, loss_fn, x: torch.Tensor, y: torch.Tensor, batch_size: int, clock=time.perf_counter):
    torch.manual_seed(0)
    model = build_model(model_name, x.shape[1])
    optimizer = (torch.optim.SGD if model_name == "slp" else torch.optim.Adam)(model.parameters(), lr=1e-2)

    def run_epoch() -> float:
        started = clock()
        for start in range(0, len(x), batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x[start:start + batch_size]), y[start:start + batch_size])
            loss.backward()
            optimizer.step()
        return clock() - started

    return run_epoch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="timed epochs per loss and model")
    parser.add_argument("--losses", default="bce,mse,accuracy,f1,gmean,balanced_accuracy,sol-f1")
    parser.add_argument("--running", action="store_true", help="also each compiled loss with estimator='running'")
    parser.add_argument("--cpu-time", action="store_true", help="time in process CPU time (time.process_time)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    warnings.simplefilter("ignore", metricc.MetricWarning)
    dataset = load_dataset("random")
    x = torch.tensor(dataset.X, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(dataset.y, dtype=torch.float32)
    specs = parse_losses(args.losses)
    columns = [(spec.name, spec, "batch") for spec in specs]
    if args.running:
        columns += [(f"{spec.name} (running)", spec, "running") for spec in specs if spec.is_compiled]
    print(f"# time per epoch relative to {specs[0].name} ({dataset.name}: {len(x)} rows; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {'CPU' if args.cpu_time else 'wall-clock'} time; median of the "
          "ratios within a round)\n")
    print("| model | " + " | ".join(name for name, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for model_name, batch_size in (("slp", len(x)), ("mlp", len(x) // 20)):
        runners = {name: epoch_runner(model_name, build_loss(spec, y, estimator=estimator)[0], x, y, batch_size, clock)
                   for name, spec, estimator in columns}
        for run in runners.values():  # warm-up
            run()
        times = {name: [] for name in runners}
        names = list(runners)
        for index in range(args.epochs):  # each round starts at the next loss: no loss always runs first
            for name in names[index % len(names):] + names[:index % len(names)]:
                times[name].append(runners[name]())
        reference = columns[0][0]
        ratios = {name: statistics.median(t / r for t, r in zip(values, times[reference]))
                  for name, values in times.items()}
        print(f"| {model_name} ({statistics.median(times[reference]) * 1e3:.2f} ms) | "
              + " | ".join(f"{ratios[name]:.2f}" for name, _, _ in columns) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
