"""Results as files: score tables (AnyLoss Tables 6/17/18), learning curves (Figure 5), validation curves,
learning time (Table 8).

Every function takes the :class:`DatasetResult` list the protocol produced and
returns text or writes one file; none of them trains or evaluates anything.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from pathlib import Path

import numpy as np
import torch

from ..files import check_writable, save_figure, write_file
from .protocol import DatasetResult, ExperimentConfig

ACHIEVEMENT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 1.0)


def output_paths(out: Path, model: str) -> dict[str, Path]:
    """The files one run writes, keyed by kind."""
    return {
        "scores_md": out / f"scores_{model}.md",
        "scores_csv": out / f"scores_{model}.csv",
        "folds_csv": out / f"folds_{model}.csv",
        "curves_png": out / f"learning_curves_{model}.png",
        "validation_dir": out / f"validation_curves_{model}",
        "time_md": out / f"learning_time_{model}.md",
        "time_csv": out / f"learning_time_{model}.csv",
        "config_json": out / f"run_{model}.json",
    }


def _cell(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std():.3f}"


def _format_lr(rate: float) -> str:
    return f"{rate:.0e}".replace("e-0", "e-").replace("e+0", "e")


def scores_markdown(results: list[DatasetResult], config: ExperimentConfig, command: str | None = None) -> str:
    """One table per dataset: rows are evaluation metrics, columns losses, cells mean ± std over folds."""
    out = io.StringIO()
    out.write(f"# Scores: {config.model.upper()}, {config.folds}-fold stratified cross-validation\n\n")
    if command:
        out.write(f"Command: `{command}`\n\n")
    if config.threshold == "tuned":
        threshold = ("the threshold that maximises each row's metric on the training fold (tuned per loss, "
                     "fold and metric)")
    elif config.threshold == "compiled":
        threshold = "each loss's compiled threshold (baselines 0.5)"
    else:
        threshold = f"{float(config.threshold):g}"
    out.write(f"Hard predictions at threshold {threshold} on σ(logit) of each held-out fold; metrics by "
              "scikit-learn. Mean ± standard deviation over folds; **bold**: best mean per row "
              "(ties at 3 decimals share it); †: the metric the loss targets. The tables at the other "
              "threshold rule are in folds_<model>.csv and summary.md.\n")
    if config.estimator == "running":
        kept = "forgotten at the start of every epoch" if config.reset_estimate == "epoch" else "kept across epochs"
        out.write(f"\nCompiled losses use the running estimator (momentum {config.momentum:g}; the estimate is "
                  f"{kept}; docs/minibatch.md); baselines are unaffected.\n")
    for result in results:
        names = [spec.name for spec in result.losses]
        out.write(f"\n## {result.dataset}\n\n{result.summary}\n\n")
        out.write("| metric | " + " | ".join(names) + " |\n")
        out.write("|---|" + "---:|" * len(names) + "\n")
        settings = [result.settings(name) for name in names]
        out.write("| *optimizer, lr* | " + " | ".join(f"*{s.optimizer} {_format_lr(s.learning_rate)}*"
                                                     for s in settings) + " |\n")
        out.write("| *epochs / batch* | " + " | ".join(f"*{s.epochs} / {s.batch_size}*" for s in settings) + " |\n")
        for row in result.rows:
            best = set(result.best(row))
            cells = []
            for spec in result.losses:
                text = _cell(result.scores(spec.name, row))
                if spec.target == row:
                    text += " †"
                cells.append(f"**{text}**" if spec.name in best else text)
            out.write(f"| {result.evaluators[row].label} | " + " | ".join(cells) + " |\n")
        sources = sorted({s.source for s in settings})
        out.write(f"\nLearning rates from: {', '.join(sources)} ('Table N': AnyLoss paper, appendix B; "
                  "'default': metricc's, where the paper gives none; '--lr': the command line; 'recipe': "
                  "the loss's [lr=...]; wbce, focal and lee-fbeta take BCE's rate).\n")
        for note in result.notes:
            out.write(f"\nNote: {note}\n")
    return out.getvalue()


def scores_csv(results: list[DatasetResult]) -> str:
    """The score tables as CSV: dataset, metric, then mean and std per loss, then the best loss(es)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [spec.name for spec in results[0].losses]
    writer.writerow(["dataset", "metric"] + [f"{n}{suffix}" for n in names for suffix in ("", "_std")] + ["best"])
    for result in results:
        for row in result.rows:
            values = []
            for name in names:
                scores = result.scores(name, row)
                values += [f"{scores.mean():.6f}", f"{scores.std():.6f}"]
            writer.writerow([result.dataset, row] + values + [";".join(result.best(row))])
    return out.getvalue()


FOLDS_COLUMNS = ("model", "dataset", "loss", "kind", "target", "fold", "metric", "metric_label",
                 "higher_is_better", "rule", "value", "threshold", "optimizer", "learning_rate", "epochs",
                 "batch_size", "final_train_loss", "seconds", "failed")


def folds_csv(results: list[DatasetResult]) -> str:
    """Every score of every fold, long format: at the fixed threshold (rule "fixed") and at the threshold
    tuned on the training fold (rule "tuned"), with the settings it was trained with. ``metricc experiment
    --summary-from`` rebuilds the summary from these files."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FOLDS_COLUMNS)
    for result in results:
        specs = {spec.name: spec for spec in result.losses}
        for run in result.folds:
            s, spec = run.settings, specs[run.loss]
            final = f"{run.history.losses[-1]:.6f}" if run.history.losses else "nan"
            for rule in ("fixed", "tuned"):
                for metric, value in run.values(rule).items():
                    evaluator = result.evaluators[metric]
                    threshold = run.threshold if rule == "fixed" else run.tuned_thresholds[metric]
                    writer.writerow([result.model, result.dataset, run.loss, spec.kind, spec.target or "",
                                     run.fold + 1, metric, evaluator.label, int(evaluator.higher_is_better), rule,
                                     repr(float(value)), f"{threshold:.6g}", s.optimizer, s.learning_rate, s.epochs,
                                     s.batch_size, final, f"{run.seconds:.4f}", run.failed or ""])
    return out.getvalue()


def achievement_rate(curve: np.ndarray, epoch: int) -> float:
    """AnyLoss eq. 14: the share of the total loss decrease reached after ``epoch`` epochs; NaN where the curve
    stops before (the mean curve of a loss whose training diverged in some fold stops at that epoch)."""
    if len(curve) < max(epoch, 1):
        return float("nan")
    total = curve[0] - curve[-1]
    return float((curve[0] - curve[epoch - 1]) / total) if total else float("nan")


def _time_ratio(result: DatasetResult, name: str) -> float | None:
    if "bce" not in {spec.name for spec in result.losses}:
        return None
    return result.median_epoch_seconds(name) / result.median_epoch_seconds("bce")


def learning_time_markdown(results: list[DatasetResult], config: ExperimentConfig) -> str:
    """Table 8: median time per epoch of each loss as a ratio to BCE's, measured in the same run; and Table 9."""
    names = [spec.name for spec in results[0].losses]
    out = io.StringIO()
    out.write(f"# Learning time: {config.model.upper()}\n\n")
    out.write("Median wall time of one training epoch (optimisation steps only, evaluation excluded) over all "
              "epochs of all folds, as a ratio to BCE's median measured in the same run (AnyLoss Table 8 "
              "layout; BCE = 1.00). Each loss ran with its own batch size and learning rate (see the "
              "score table); pass --batch-size and --lr to time all losses under one setting as the paper's "
              f"Table 8 did. Machine: {platform.processor() or platform.machine()}, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads, {config.dtype}, {config.device}.\n\n")
    out.write("| dataset | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n")
    for result in results:
        cells = []
        for name in names:
            ratio = _time_ratio(result, name)
            cells.append("n/a (no bce)" if ratio is None else f"{ratio:.2f}")
        out.write(f"| {result.dataset} | " + " | ".join(cells) + " |\n")
    out.write("\nMilliseconds per epoch (median) and batch size:\n\n")
    out.write("| dataset | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n")
    for result in results:
        cells = [f"{result.median_epoch_seconds(n) * 1e3:.3f} ms (batch {result.settings(n).batch_size})"
                 for n in names]
        out.write(f"| {result.dataset} | " + " | ".join(cells) + " |\n")
    out.write("\nAchievement rate (AnyLoss eq. 14, Table 9): share of the total decrease of the mean training "
              "loss reached after a given share of the epochs.\n")
    for result in results:
        epochs = max(len(result.mean_curve(name)) for name in names)
        marks = sorted({max(1, round(f * epochs)) for f in ACHIEVEMENT_FRACTIONS})
        out.write(f"\n**{result.dataset}**\n\n| loss | " + " | ".join(f"epoch {m}" for m in marks) + " |\n")
        out.write("|---|" + "---:|" * len(marks) + "\n")
        for name in names:
            curve = result.mean_curve(name)
            out.write(f"| {name} | " + " | ".join(f"{achievement_rate(curve, m):.3f}" for m in marks) + " |\n")
    return out.getvalue()


def learning_time_csv(results: list[DatasetResult]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "loss", "median_epoch_ms", "ratio_to_bce", "batch_size", "epochs"])
    for result in results:
        for spec in result.losses:
            ratio = _time_ratio(result, spec.name)
            settings = result.settings(spec.name)
            writer.writerow([result.dataset, spec.name, f"{result.median_epoch_seconds(spec.name) * 1e3:.4f}",
                             "" if ratio is None else f"{ratio:.4f}", settings.batch_size, settings.epochs])
    return out.getvalue()


def _color(spec, index: int):
    from matplotlib import colormaps

    if spec.kind == "bce":
        return "red"
    baseline_colors = {"mse": "darkorange", "wbce": "saddlebrown", "focal": "purple", "lee-fbeta": "olive"}
    if spec.kind in baseline_colors:
        return baseline_colors[spec.kind]
    palette = colormaps["Blues" if spec.family == "anyloss" else "Greens"]
    return palette(0.45 + 0.5 * ((index * 0.37) % 1.0))


def plot_learning_curves(results: list[DatasetResult], config: ExperimentConfig, path: Path, *,
                         overwrite: bool = False) -> None:
    """Figure 5: mean training loss per epoch over folds, one panel per dataset; BCE red, AnyLoss blue, SOL green."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(len(results), 4)
    rows = -(-len(results) // columns)
    figure = Figure(figsize=(5.0 * columns, 4.0 * rows), dpi=100 if len(results) > 4 else 120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[len(results):]:
        axis.set_visible(False)
    styles = ("-", "--", ":", "-.")
    for axis, result in zip(axes, results):
        lowest = 0.0
        for index, spec in enumerate(result.losses):
            curve = result.mean_curve(spec.name)
            lowest = min(lowest, float(np.min(curve))) if len(curve) else lowest
            axis.plot(np.arange(1, len(curve) + 1), curve, label=spec.name, color=_color(spec, index),
                      linestyle=styles[index % len(styles)] if spec.kind == "compiled" else "-", linewidth=1.8)
        axis.set_title(f"Loss curve: {result.dataset} ({config.model.upper()})")
        axis.set_xlabel("epoch")
        axis.set_ylabel("training loss (mean over folds)")
        axis.set_ylim(bottom=lowest)  # 0, unless a loss goes negative (lee-fbeta's log(c + p) can)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, overwrite=overwrite)


def plot_validation_curves(result: DatasetResult, config: ExperimentConfig, path: Path, *,
                           overwrite: bool = False) -> None:
    """Held-out metrics per epoch (mean over folds), one panel per reported metric, one line per loss.

    Each metric is on its own axis and scale, so losses of different scales compare at a glance;
    the values are those of hard predictions at the fixed threshold (0.5, or the compiled one).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result.rows
    columns = min(len(rows), 3)
    lines = -(-len(rows) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * lines + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for axis in axes[len(rows):]:
        axis.set_visible(False)
    styles = ("-", "--", ":", "-.")
    for axis, row in zip(axes, rows):
        for index, spec in enumerate(result.losses):
            epochs, values = result.mean_validation_curve(spec.name, row)
            if not len(epochs):
                continue
            axis.plot(epochs, values, label=spec.name, color=_color(spec, index),
                      linestyle=styles[index % len(styles)] if spec.kind == "compiled" else "-", linewidth=1.5)
        axis.set_title(result.evaluators[row].label, fontsize=10)
        axis.set_xlabel("epoch", fontsize=8)
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    threshold = "0.5" if config.threshold in ("tuned", 0.5) else str(config.threshold)
    figure.suptitle(f"{result.dataset} ({config.model.upper()}): held-out metrics per epoch, mean over "
                    f"{config.folds} folds, threshold {threshold}", fontsize=10)
    if len(rows) < len(axes):  # the legend fills the first empty panel
        spare = axes[len(rows)]
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(handles, labels, loc="center", fontsize=8, ncol=1 + len(labels) // 9)
        figure.tight_layout(rect=(0, 0, 1, 0.96))
    else:
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
        figure.tight_layout(rect=(0, 0.6 / (3.4 * lines + 0.6) + 0.02, 1, 0.96))
    save_figure(figure, path, overwrite=overwrite)


def validation_curve_paths(results: list[DatasetResult], folder: Path) -> list[Path]:
    return [folder / f"{result.dataset}.png" for result in results]


def config_json(results: list[DatasetResult], config: ExperimentConfig, command: str | None) -> str:
    """What was run, for the record: command, configuration, datasets, per-loss settings, versions."""
    record = {
        "command": command,
        "config": {key: (str(value) if isinstance(value, torch.dtype) else value)
                   for key, value in vars(config).items()},
        "datasets": [{"name": r.dataset, "summary": r.summary,
                      "losses": {spec.name: {"entry": spec.source or spec.name, "kind": spec.kind,
                                             "metric": spec.metric,
                                             "relaxation": spec.relaxation, "target": spec.target,
                                             "options": dict(spec.options), "recipe": dict(spec.recipe),
                                             "params": dict(spec.params),
                                             **vars(r.settings(spec.name))} for spec in r.losses},
                      "notes": r.notes} for r in results],
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    return json.dumps(record, indent=2, default=str) + "\n"


def write_all(results: list[DatasetResult], config: ExperimentConfig, out: Path, *, command: str | None = None,
              overwrite: bool = False) -> dict[str, Path]:
    """Write every output file into ``out`` (created if missing); refuses to replace files unless ``overwrite``."""
    paths = output_paths(out, config.model)
    ensure_writable(paths, overwrite, validation_curve_paths(results, paths["validation_dir"]))
    texts = {
        "scores_md": scores_markdown(results, config, command),
        "scores_csv": scores_csv(results),
        "folds_csv": folds_csv(results),
        "time_md": learning_time_markdown(results, config),
        "time_csv": learning_time_csv(results),
        "config_json": config_json(results, config, command),
    }
    for key, text in texts.items():
        write_file(paths[key], text, overwrite=overwrite)
    plot_learning_curves(results, config, paths["curves_png"], overwrite=overwrite)
    paths["validation_dir"].mkdir(exist_ok=True)
    for result, path in zip(results, validation_curve_paths(results, paths["validation_dir"])):
        if any(run.curve_epochs for run in result.folds):
            plot_validation_curves(result, config, path, overwrite=overwrite)
    return paths


def ensure_writable(paths: dict[str, Path], overwrite: bool, more: list[Path] = ()) -> None:
    """Create the output folder; raise FileExistsError if a result file exists and ``overwrite`` is off."""
    folder = next(iter(paths.values())).parent
    folder.mkdir(parents=True, exist_ok=True)
    files = [path for key, path in paths.items() if not key.endswith("_dir")]
    try:  # every file the run writes, PNGs included: a link planted there (even a dangling one) counts
        check_writable([*files, *more], overwrite)
    except FileExistsError as error:
        raise FileExistsError(f"{error}, or choose another --out folder") from None
