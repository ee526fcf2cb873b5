"""F1 against batch size for the batch and running estimators, and the full-batch result (issue 14 item 2).

Trains the experiments package's MLP with the compiled F1 loss (AnyLoss relaxation) through
``metricc.experiments.protocol.run_dataset``, the code ``metricc experiment`` runs, on imbalanced
tables, at several batch sizes, once per estimator, and once on the full training fold. Every
estimator of a (table, repeat, fold) gets the same folds, initial weights and batch order (all
seeded from the repeat and the fold), so differences are paired. Every run takes about the same
number of gradient steps (``--steps``; epochs = steps / batches per epoch, rounded up), the same
learning rate and optimizer (Adam), so batch sizes compare at an equal number of updates. Scores:
F1 of hard predictions at threshold 0.5 on each held-out fold (and at the threshold tuned on the
training fold, recorded beside it).

    python benchmarks/minibatch.py run --workers 2      # the runs, resumable: rows go to --results
    python benchmarks/minibatch.py report               # table (Markdown, CSV) and plot into docs/

``run`` appends one CSV row per fold to ``--results`` and skips configurations already there, so an
interrupted run continues where it stopped. Variants: ``batch``, ``running:M`` (momentum M, the
estimate kept across epochs), ``running:M:epoch`` (reset at every epoch), ``full`` (full batch, the
batch estimator; the batch sizes are ignored); a variant may end in ``@LR`` for another learning
rate, e.g. ``running:0.9@0.001``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TABLES = ("mammography", "yeast_me2", "wine_quality", "car_eval_4", "ozone_level_8hr")
VARIANTS = ("full", "batch", "running:0.9")
FIELDS = ("table", "variant", "batch_size", "seed", "fold", "steps", "epochs", "learning_rate", "f1", "f1_tuned",
          "positives_test", "cpu_seconds", "failed")
BAR = 0.02  # the bar: running within 0.02 of the full-batch F1


@dataclasses.dataclass(frozen=True)
class Variant:
    """How the compiled F1 loss estimates the confusion matrix, and at which learning rate."""

    name: str
    estimator: str
    momentum: float = 0.9
    reset: str = "never"
    learning_rate: float | None = None  # None: --lr

    @classmethod
    def parse(cls, text: str) -> Variant:
        body, _, rate = text.partition("@")
        parts = body.split(":")
        rate_value = float(rate) if rate else None
        if parts[0] in ("batch", "full") and len(parts) == 1:
            return cls(text, parts[0], learning_rate=rate_value)
        if parts[0] == "running" and len(parts) in (2, 3) and (len(parts) == 2 or parts[2] in ("never", "epoch")):
            return cls(text, "running", float(parts[1]), parts[2] if len(parts) == 3 else "never", rate_value)
        raise ValueError(f"variant {text!r}: use batch, full, running:M or running:M:epoch, optionally @LR")


def load_table(name: str, data: Path):
    from metricc.experiments.datasets import load_csv

    return load_csv(data / f"{name}.csv", "label", ())


def epochs_for(n_rows: int, folds: int, batch_size: int | None, steps: int) -> int:
    """Epochs that give about ``steps`` gradient steps on a training fold (one step per epoch at full batch)."""
    if batch_size is None:
        return steps
    n_train = n_rows - n_rows // folds
    return max(1, math.ceil(steps / math.ceil(n_train / batch_size)))


def run_one(job: dict) -> list[dict]:
    """One (table, variant, batch size, repeat): all folds, via the experiments protocol."""
    import torch

    from metricc.experiments.losses import parse_losses
    from metricc.experiments.protocol import ExperimentConfig, run_dataset

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    variant = Variant.parse(job["variant"])
    dataset = load_table(job["table"], Path(job["data"]))
    full = variant.estimator == "full"
    epochs = epochs_for(dataset.n_samples, job["folds"], None if full else job["batch_size"], job["steps"])
    rate = variant.learning_rate or job["lr"]
    config = ExperimentConfig(model="mlp", folds=job["folds"], seed=job["seed"], epochs=epochs, learning_rate=rate,
                              batch_size=1.0 if full else job["batch_size"], optimizer="adam",
                              estimator="batch" if full else variant.estimator, momentum=variant.momentum,
                              reset_estimate=variant.reset, curve_points=0, threshold=0.5)
    started = time.process_time()
    result = run_dataset(dataset, parse_losses("f1"), config)
    seconds = time.process_time() - started
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=job["folds"], shuffle=True, random_state=job["seed"])
    positives = [int(dataset.y[test].sum()) for _, test in splitter.split(dataset.X, dataset.y)]
    rows = []
    for run in result.runs("f1"):
        rows.append({"table": job["table"], "variant": job["variant"], "batch_size": "full" if full else
                     job["batch_size"], "seed": job["seed"], "fold": run.fold, "steps": job["steps"],
                     "epochs": epochs, "learning_rate": rate, "f1": f"{run.scores['f1']:.6f}",
                     "f1_tuned": f"{run.tuned['f1']:.6f}", "positives_test": positives[run.fold],
                     "cpu_seconds": f"{seconds / job['folds']:.2f}", "failed": run.failed or ""})
    return rows


def job_key(table, variant, batch_size, seed) -> tuple:
    return (table, variant, str(batch_size), str(seed))


def command_run(args) -> int:
    import multiprocessing

    variants = [Variant.parse(v).name for v in args.variants.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    done = set()
    results = Path(args.results)
    if results.exists():
        with open(results, newline="") as handle:
            done = {job_key(r["table"], r["variant"], r["batch_size"], r["seed"]) for r in csv.DictReader(handle)}
    jobs = []
    for seed in range(args.repeats):
        for table in args.tables.split(","):
            for variant in variants:
                for batch_size in ([None] if variant.startswith("full") else batch_sizes):
                    key = job_key(table, variant, "full" if batch_size is None else batch_size, seed)
                    if key not in done:
                        jobs.append({"table": table, "variant": variant, "batch_size": batch_size, "seed": seed,
                                     "folds": args.folds, "steps": args.steps, "lr": args.lr, "data": str(args.data)})
    # Longest first (small batches on the largest table), so that the workers finish together.
    sizes = {table: os.path.getsize(Path(args.data) / f"{table}.csv") for table in args.tables.split(",")}
    jobs.sort(key=lambda job: -(sizes[job["table"]] / (job["batch_size"] or 4096) ** 0.5))
    print(f"{len(jobs)} configurations to run ({len(done)} already in {results})", flush=True)
    new_file = not results.exists()
    with open(results, "a", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        if new_file:
            writer.writeheader()
        with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=4) as pool:
            for rows in pool.imap_unordered(run_one, jobs):
                writer.writerows(rows)
                handle.flush()
                first = rows[0]
                mean = statistics.mean(float(r["f1"]) for r in rows)
                print(f"{first['table']} {first['variant']} batch {first['batch_size']} seed {first['seed']}: "
                      f"F1 {mean:.3f} ({first['epochs']} epochs, {first['cpu_seconds']} s CPU per fold)", flush=True)
    return 0


# --- report -------------------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def scores(rows, table, variant, batch_size, column="f1") -> dict[tuple[str, str], float]:
    """{(seed, fold): score} of one configuration."""
    return {(r["seed"], r["fold"]): float(r[column]) for r in rows
            if r["table"] == table and r["variant"] == variant and r["batch_size"] == str(batch_size)}


def mean_se(values) -> tuple[float, float]:
    values = list(values)
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def paired(a: dict, b: dict) -> list[float]:
    return [a[key] - b[key] for key in sorted(set(a) & set(b))]


def command_report(args) -> int:
    rows = read_rows(Path(args.results))
    tables = [t for t in args.tables.split(",") if any(r["table"] == t for r in rows)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    reference, running = args.reference, args.running
    variants = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "full"]
    column = "f1_tuned" if args.tuned else "f1"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"| table (prevalence) | batch | full batch | {reference} | {running} | {running} − {reference} "
             f"| {running} − full | bar met |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    csv_rows = []
    for table in tables:
        full = scores(rows, table, "full", "full", column)
        full_mean, full_se = mean_se(full.values())
        prevalence = _prevalence(table, Path(args.data))
        for batch_size in batch_sizes:
            base = scores(rows, table, reference, batch_size, column)
            mine = scores(rows, table, running, batch_size, column)
            if not base or not mine:
                continue
            (b_mean, b_se), (r_mean, r_se) = mean_se(base.values()), mean_se(mine.values())
            d_batch, d_batch_se = mean_se(paired(mine, base))
            d_full, d_full_se = mean_se(paired(mine, full))
            met = d_batch >= 0 and d_full >= -BAR
            lines.append(f"| {table} ({prevalence:.1%}) | {batch_size} | {full_mean:.3f} ± {full_se:.3f} | "
                         f"{b_mean:.3f} ± {b_se:.3f} | {r_mean:.3f} ± {r_se:.3f} | {d_batch:+.3f} ± {d_batch_se:.3f} | "
                         f"{d_full:+.3f} ± {d_full_se:.3f} | {'yes' if met else 'no'} |")
            csv_rows.append({"table": table, "prevalence": f"{prevalence:.4f}", "batch_size": batch_size,
                             "runs": len(mine), "full": f"{full_mean:.4f}", "full_se": f"{full_se:.4f}",
                             **{f"{name}{suffix}": f"{value:.4f}" for name, (mean, se) in
                                ((v, mean_se(scores(rows, table, v, batch_size, column).values())) for v in variants)
                                for suffix, value in (("", mean), ("_se", se))},
                             "running_minus_batch": f"{d_batch:.4f}", "running_minus_batch_se": f"{d_batch_se:.4f}",
                             "running_minus_full": f"{d_full:.4f}", "running_minus_full_se": f"{d_full_se:.4f}",
                             "bar_met": met})
    text = "\n".join(lines)
    print(text)
    suffix = "_tuned" if args.tuned else ""
    with open(out / f"minibatch_f1{suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    _variants_table(rows, tables, batch_sizes, variants, reference, column)
    _plot(rows, tables, batch_sizes, variants, column, out / f"minibatch_f1{suffix}.png", Path(args.data))
    print(f"\nwrote {out / f'minibatch_f1{suffix}.csv'} and {out / f'minibatch_f1{suffix}.png'}")
    return 0


def _variants_table(rows, tables, batch_sizes, variants, reference, column) -> None:
    """Every variant's paired difference to the reference estimator, where it was run."""
    print("\n| table | batch | " + " | ".join(f"{v} − {reference}" for v in variants if v != reference) + " |")
    print("|---|---:|" + "---:|" * (len(variants) - 1))
    for table in tables:
        for batch_size in batch_sizes:
            base = scores(rows, table, reference, batch_size, column)
            cells = []
            for variant in variants:
                if variant == reference:
                    continue
                diff = paired(scores(rows, table, variant, batch_size, column), base)
                mean, se = mean_se(diff)
                cells.append(f"{mean:+.3f} ± {se:.3f} (n={len(diff)})" if diff else "")
            print(f"| {table} | {batch_size} | " + " | ".join(cells) + " |")


def _prevalence(table: str, data: Path) -> float:
    with open(data / f"{table}.csv", newline="") as handle:
        labels = [float(r["label"]) for r in csv.DictReader(handle)]
    return sum(labels) / len(labels)


def _plot(rows, tables, batch_sizes, variants, column, path: Path, data: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metricc.experiments.summary import save_compact_png

    columns = min(len(tables), 3)
    lines = math.ceil(len(tables) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.3 * columns, 2.6 * lines), dpi=90, squeeze=False)
    for axis, table in zip(axes.flat, tables):
        full = list(scores(rows, table, "full", "full", column).values())
        if full:
            mean, se = mean_se(full)
            axis.axhline(mean, color="black", lw=1, label="full batch")
            axis.axhspan(mean - se, mean + se, color="black", alpha=0.1, lw=0)
        for index, variant in enumerate(variants):
            points = [(b, mean_se(scores(rows, table, variant, b, column).values())) for b in batch_sizes]
            points = [(b, m, s) for b, (m, s) in points if not math.isnan(m)]
            if not points:
                continue
            shift = 1 + 0.04 * (index - (len(variants) - 1) / 2)  # keep error bars apart
            axis.errorbar([b * shift for b, _, _ in points], [m for _, m, _ in points],
                          yerr=[s for _, _, s in points], marker="o", ms=3, lw=1.2, capsize=2, label=variant)
        axis.set_xscale("log", base=2)
        axis.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        axis.minorticks_off()
        axis.set_title(f"{table} ({_prevalence(table, data):.1%})", fontsize=9)
        axis.set_xlabel("batch size", fontsize=8)
        axis.set_ylabel("held-out F1" + (" (tuned)" if column == "f1_tuned" else ""), fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    spare = list(axes.flat)[len(tables):]
    handles, labels = list(axes.flat)[0].get_legend_handles_labels()
    if spare:
        spare[0].legend(handles, labels, loc="center", fontsize=8, frameon=False)
        for axis in spare:
            axis.axis("off")
    else:
        list(axes.flat)[0].legend(fontsize=7)
    figure.suptitle("MLP, compiled F1 loss: mean ± SE over folds", fontsize=9)
    figure.tight_layout()
    save_compact_png(figure, path)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report"):
        sub = commands.add_parser(name)
        sub.add_argument("--tables", default=",".join(TABLES))
        sub.add_argument("--batch-sizes", default="16,64,256")
        sub.add_argument("--data", type=Path, default=DATA, help=f"folder of the tables (default {DATA})")
        sub.add_argument("--results", default="/tmp/metricc_minibatch.csv", help="per-fold rows (CSV)")
    run, report = commands.choices["run"], commands.choices["report"]
    run.add_argument("--variants", default=",".join(VARIANTS))
    run.add_argument("--steps", type=int, default=3000, help="gradient steps per run (default 3000)")
    run.add_argument("--folds", type=int, default=5)
    run.add_argument("--repeats", type=int, default=2, help="repeated cross-validation, seeds 0 .. repeats-1")
    run.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (default 1e-2)")
    run.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    report.add_argument("--reference", default="batch")
    report.add_argument("--running", default="running:0.9")
    report.add_argument("--tuned", action="store_true", help="F1 at the threshold tuned on the training fold")
    report.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    return command_run(args) if args.command == "run" else command_report(args)


if __name__ == "__main__":
    sys.exit(main())
