"""Time per training epoch with each loss, as a ratio to BCE (the AnyLoss paper's Table 8).

SLP: one full-batch gradient step per epoch; MLP: mini-batches of 5 % of the data
(Adam), on the `random` dataset (10,000 × 2, 9:1). Epochs of all losses are run
round-robin in one process so that machine load affects them alike; medians are
reported. Needs the experiments extra (scikit-learn).

    python benchmarks/bench_epochs.py [--epochs 40] [--losses bce,mse,f1,gmean,balanced_accuracy,sol-f1]
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


def epoch_runner(model_name: str, loss_fn, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    torch.manual_seed(0)
    model = build_model(model_name, x.shape[1])
    optimizer = (torch.optim.SGD if model_name == "slp" else torch.optim.Adam)(model.parameters(), lr=1e-2)

    def run_epoch() -> float:
        started = time.perf_counter()
        for start in range(0, len(x), batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x[start:start + batch_size]), y[start:start + batch_size])
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    return run_epoch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="timed epochs per loss and model")
    parser.add_argument("--losses", default="bce,mse,accuracy,f1,gmean,balanced_accuracy,sol-f1")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", metricc.MetricWarning)
    dataset = load_dataset("random")
    x = torch.tensor(dataset.X, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(dataset.y, dtype=torch.float32)
    specs = parse_losses(args.losses)
    print(f"# time per epoch relative to BCE ({dataset.name}: {len(x)} rows; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| model | " + " | ".join(spec.name for spec in specs) + " |")
    print("|---|" + "---|" * len(specs))
    for model_name, batch_size in (("slp", len(x)), ("mlp", len(x) // 20)):
        runners = {spec.name: epoch_runner(model_name, build_loss(spec, y)[0], x, y, batch_size) for spec in specs}
        for run in runners.values():  # warm-up
            run()
        times = {name: [] for name in runners}
        for _ in range(args.epochs):
            for name, run in runners.items():
                times[name].append(run())
        medians = {name: statistics.median(values) for name, values in times.items()}
        reference = medians[specs[0].name]
        print(f"| {model_name} ({reference * 1e3:.2f} ms) | "
              + " | ".join(f"{medians[spec.name] / reference:.2f}" for spec in specs) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
