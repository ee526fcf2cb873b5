"""Reports of the segmentation experiment: score tables, paired differences, masks side by side.

Scores are per-image Dice and IoU on the test split. A run's score is the mean over the test images; a
loss's, the mean ± standard deviation of its runs' scores over seeds. A compiled loss is compared with a
baseline by paired differences: per seed (the same initial weights and batches), and per source image
(averaged over seeds and over the crops of one image), with a 95 % bootstrap interval over source
images; "better" or "worse" where that interval excludes 0 *and* every seed's difference has that sign,
else "tie". The interval alone covers the test images, not training: two losses with equal values and
gradients (the compiled identity Dice and MONAI's) trained at one rate from the same weights on the same
batches end up to 0.015 Dice apart in a seed, as float rounding sends them down different paths.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .segmentation_protocol import LossResult, VariantResult

SCORES = ("dice", "iou")
BOOTSTRAP = 10_000


def _scores(result: LossResult, score: str) -> np.ndarray:
    """(seeds, test images) of one loss."""
    return np.array([getattr(run, f"test_{score}") for run in result.runs])


def mean_sd(values: np.ndarray) -> str:
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{float(np.mean(values)):.3f} ± {spread:.3f}"


def paired_difference(a: LossResult, b: LossResult, score: str, sources: np.ndarray,
                      seed: int = 0) -> dict[str, float]:
    """a − b: per-seed means (mean, sd) and the per-source-image mean with its 95 % bootstrap interval."""
    seeds = min(len(a.runs), len(b.runs))
    difference = _scores(a, score)[:seeds] - _scores(b, score)[:seeds]
    per_seed = difference.mean(axis=1)
    by_source = np.array([difference[:, sources == s].mean() for s in np.unique(sources)])
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, len(by_source), (BOOTSTRAP, len(by_source)))
    means = by_source[draws].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    verdict = "tie"
    if low > 0 and bool((per_seed > 0).all()):
        verdict = "better"
    elif high < 0 and bool((per_seed < 0).all()):
        verdict = "worse"
    return {"mean": float(per_seed.mean()), "seed_sd": float(per_seed.std(ddof=1)) if seeds > 1 else 0.0,
            "image_mean": float(by_source.mean()), "low": float(low), "high": float(high), "verdict": verdict}


def score_table(variant: VariantResult) -> list[str]:
    lines = ["| loss | learning rate | validation Dice per rate | test Dice | test IoU | CPU s per run |",
             "|---|---:|---|---:|---:|---:|"]
    best = {score: max(np.mean(_scores(r, score)) for r in variant.results) for score in SCORES}
    for result in variant.results:
        cells = []
        for score in SCORES:
            cell = mean_sd(_scores(result, score).mean(axis=1))
            cells.append(f"**{cell}**" if round(np.mean(_scores(result, score)), 3) == round(best[score], 3) else cell)
        rates = ", ".join(f"{rate:g}: {value:.3f}" for rate, value in result.validation.items())
        cpu = np.median([run.cpu_seconds for run in result.runs])
        failed = [run for run in result.runs if run.failed]
        name = result.spec.name + (f" ({len(failed)} failed)" if failed else "")
        lines.append(f"| {name} | {result.learning_rate:g} | {rates} | {cells[0]} | {cells[1]} | {cpu:.0f} |")
    return lines


def difference_table(variant: VariantResult, score: str) -> list[str]:
    """Rows: compiled losses; columns: baselines; cells: mean paired difference over seeds and the 95 %
    interval over source images."""
    _, _, sources = variant.dataset.part("test")
    baselines = [r for r in variant.results if not r.spec.is_compiled]
    compiled = [r for r in variant.results if r.spec.is_compiled]
    if not baselines or not compiled:
        return []
    lines = ["| compiled − baseline | " + " | ".join(b.spec.name for b in baselines) + " |",
             "|---|" + "---|" * len(baselines)]
    for result in compiled:
        cells = []
        for baseline in baselines:
            d = paired_difference(result, baseline, score, sources)
            mark = {"better": " ▲", "worse": " ▼", "tie": ""}[d["verdict"]]
            cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}")
        lines.append(f"| {result.spec.name} | " + " | ".join(cells) + " |")
    return lines


def markdown(variants: list[VariantResult], command: str) -> str:
    parts = ["# Segmentation experiment", "", f"`{command}`", ""]
    for variant in variants:
        seeds = len(variant.results[0].runs) if variant.results else 0
        parts += [f"## {variant.dataset.summary()}", "",
                  f"Test scores: mean ± sd over {seeds} seeds of the mean per-image score.", "",
                  *score_table(variant), ""]
        for score in SCORES:
            table = difference_table(variant, score)
            if table:
                parts += [f"Paired differences in test {score.capitalize() if score == 'dice' else 'IoU'}: the mean "
                          "over seeds, [95 % bootstrap interval over source images]; ▲/▼ where the interval "
                          "excludes 0 and every seed's difference has the same sign.", "", *table, ""]
    return "\n".join(parts)


def write_csv(variants: list[VariantResult], out: Path) -> dict[str, Path]:
    """``segmentation_runs.csv`` (every run, chosen or not, with its mean scores) and
    ``segmentation_images.csv`` (the chosen runs' per-image test scores) and
    ``segmentation_differences.csv`` (every compiled loss against every baseline)."""
    paths = {"runs": out / "segmentation_runs.csv", "images": out / "segmentation_images.csv",
             "differences": out / "segmentation_differences.csv"}
    with open(paths["runs"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "loss", "learning_rate", "seed", "chosen", "val_dice", "test_dice", "test_iou",
                         "cpu_seconds", "final_loss", "failed"])
        for variant in variants:
            for result in variant.results:
                tried = [run for rate, run in result.trials.items() if rate != result.learning_rate]
                for chosen, run in [(1, run) for run in result.runs] + [(0, run) for run in tried]:
                    writer.writerow([variant.dataset.name, result.spec.name, f"{run.learning_rate:g}", run.seed,
                                     chosen, f"{run.val_score:.6f}", f"{np.mean(run.test_dice):.6f}",
                                     f"{np.mean(run.test_iou):.6f}", f"{run.cpu_seconds:.1f}",
                                     f"{run.final_loss:.6g}", run.failed or ""])
    with open(paths["images"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "loss", "seed", "test_item", "source_image", "dice", "iou"])
        for variant in variants:
            _, _, sources = variant.dataset.part("test")
            for result in variant.results:
                for run in result.runs:
                    for item, (dice, iou) in enumerate(zip(run.test_dice, run.test_iou)):
                        writer.writerow([variant.dataset.name, result.spec.name, run.seed, item, int(sources[item]),
                                         f"{dice:.6f}", f"{iou:.6f}"])
    with open(paths["differences"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "compiled", "baseline", "score", "mean_over_seeds", "sd_over_seeds",
                         "mean_over_images", "ci95_low", "ci95_high", "verdict"])
        for variant in variants:
            _, _, sources = variant.dataset.part("test")
            for result in variant.results:
                if not result.spec.is_compiled:
                    continue
                for baseline in variant.results:
                    if baseline.spec.is_compiled:
                        continue
                    for score in SCORES:
                        d = paired_difference(result, baseline, score, sources)
                        writer.writerow([variant.dataset.name, result.spec.name, baseline.spec.name, score,
                                         f"{d['mean']:.6f}", f"{d['seed_sd']:.6f}", f"{d['image_mean']:.6f}",
                                         f"{d['low']:.6f}", f"{d['high']:.6f}", d["verdict"]])
    return paths


def figure_items(variant: VariantResult, count: int = 4) -> list[int]:
    """Test items at evenly spaced quantiles of foreground fraction: chosen by the data, not the results."""
    _, masks, _ = variant.dataset.part("test")
    order = np.argsort(masks.double().mean(dim=(1, 2)).numpy(), kind="stable")
    return [int(order[int(round(q * (len(order) - 1)))]) for q in np.linspace(0.1, 0.9, count)]


def write_masks_figure(variant: VariantResult, path: Path, count: int = 4) -> Path:
    """Rows: test images; columns: the image, its mask, and each loss's prediction (first seed) coloured
    by agreement: white where both say nucleus, red a false positive, blue a false negative."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, masks, _ = variant.dataset.part("test")
    items = figure_items(variant, count)
    names = [r.spec.name for r in variant.results]
    columns = 2 + len(names)
    figure, axes = plt.subplots(len(items), columns, figsize=(1.25 * columns, 1.4 * len(items)), squeeze=False)
    for row, item in enumerate(items):
        image = images[item].permute(1, 2, 0).numpy()
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        truth = masks[item].numpy().astype(bool)
        panels = [("image", image), ("mask", truth.astype(float))]
        for name in names:
            predicted = variant.predictions[name][item]
            coloured = np.zeros(truth.shape + (3,))
            coloured[predicted & truth] = (1, 1, 1)
            coloured[predicted & ~truth] = (0.9, 0.1, 0.1)
            coloured[~predicted & truth] = (0.2, 0.4, 1.0)
            size = predicted.sum() + truth.sum()
            dice = 2 * (predicted & truth).sum() / size if size else 1.0
            panels.append((f"{name}\nDice {dice:.2f}", coloured))
        for column, (title, panel) in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(title, fontsize=6)
    figure.suptitle(f"{variant.dataset.name}: test predictions, first seed (white: nucleus found, red: false "
                    "positive, blue: missed)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_scores_figure(variants: list[VariantResult], path: Path) -> Path:
    """Test Dice per loss and variant: each seed's mean per-image Dice as a dot, the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 4.2), squeeze=False)
    for axis, variant in zip(axes[0], variants):
        names = [r.spec.name for r in variant.results]
        for index, result in enumerate(variant.results):
            per_seed = _scores(result, "dice").mean(axis=1)
            colour = "tab:orange" if result.spec.is_compiled else "tab:blue"
            axis.barh(index, per_seed.mean(), color=colour, alpha=0.45)
            axis.plot(per_seed, [index] * len(per_seed), "o", color=colour, markersize=3)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.invert_yaxis()
        low = min(_scores(r, "dice").mean(axis=1).min() for r in variant.results)
        axis.set_xlim(max(0.0, low - 0.03), 1.0)
        axis.set_xlabel("test Dice (mean per image); dots: seeds")
        axis.set_title(variant.dataset.summary(), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
