"""Across many tables: wins, ties and losses of each compiled loss against each baseline.

For every model, threshold rule, compiled loss L (with target metric M), baseline B and
dataset, the folds give paired scores (same splits, same initial weights): d_k = score of L
on M in fold k minus B's, signed so that d > 0 means L is better. The outcome on a dataset is

* ``se`` rule (default): a win if mean(d) > SE(d) = sd(d)/√k, a loss if mean(d) < −SE(d),
  else a tie ("a difference within one standard error of the paired fold differences");
* ``wilcoxon`` rule: a win or loss if the Wilcoxon signed-rank test over the k fold
  differences gives p < 0.05 (two-sided), else a tie. With k ≤ 5 folds it cannot reach
  0.05 (the smallest two-sided p is 2/2^k = 0.0625 at k = 5), so every outcome is a tie.

Baselines are every non-compiled loss of the run, at the fixed threshold and at its tuned
threshold (``bce+tuned``). "best of (...)" compares, per dataset, with whichever of the named
baselines has the best mean there (chosen after the fact, which favours the baseline).
Across datasets, a Wilcoxon signed-rank test over the per-dataset mean differences says
whether L is better than B in general (Demšar 2006), and the AnyLoss paper's form
("wins on 90 of 102 datasets") counts the datasets where L's mean beats B's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..files import write_file

TIE_RULES = ("se", "wilcoxon")
GOAL_SET = {"fixed": ("wbce", "focal", "bce+tuned"), "tuned": ("wbce+tuned", "focal+tuned", "bce+tuned")}
GOAL_BEAT = {"fixed": ("bce", "mse"), "tuned": ("bce+tuned", "mse+tuned")}
RULE_TITLES = {"fixed": "fixed threshold (0.5, or the compiled loss's own with --threshold compiled)",
               "tuned": "tuned threshold (every loss at the threshold that maximises the metric on its training fold)"}


@dataclasses.dataclass
class ScoreTable:
    """Fold scores of every (model, dataset, loss, threshold rule, metric), with what the summary needs."""

    values: dict[tuple[str, str, str, str, str], np.ndarray] = dataclasses.field(default_factory=dict)
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)
    targets: dict[str, str | None] = dataclasses.field(default_factory=dict)
    higher: dict[str, bool] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    models: list[str] = dataclasses.field(default_factory=list)
    datasets: list[str] = dataclasses.field(default_factory=list)
    losses: list[str] = dataclasses.field(default_factory=list)
    as_baseline: frozenset[str] = frozenset()  # compiled losses counted as baselines (e.g. a default vs a recipe)

    def add(self, model: str, dataset: str, loss: str, kind: str, target: str | None, rule: str, metric: str,
            fold: int, value: float, higher_is_better: bool, label: str) -> None:
        for items, item in ((self.models, model), (self.datasets, dataset), (self.losses, loss)):
            if item not in items:
                items.append(item)
        self.kinds[loss], self.targets[loss] = kind, target
        self.higher[metric], self.labels[metric] = higher_is_better, label
        key = (model, dataset, loss, rule, metric)
        folds = self.values.setdefault(key, np.full(0, np.nan))
        if fold >= folds.size:
            folds = np.concatenate([folds, np.full(fold + 1 - folds.size, np.nan)])
        folds[fold] = value
        self.values[key] = folds

    @property
    def compiled(self) -> list[str]:
        return [loss for loss in self.losses
                if self.kinds[loss] == "compiled" and self.targets[loss] and loss not in self.as_baseline]

    @property
    def baselines(self) -> list[str]:
        return [loss for loss in self.losses if self.kinds[loss] != "compiled" or loss in self.as_baseline]

    def counting_as_baselines(self, names) -> ScoreTable:
        """The same scores with the compiled losses ``names`` counted as baselines; unknown names raise ValueError."""
        unknown = [name for name in names if name not in self.losses]
        if unknown:
            raise ValueError(f"no loss named {', '.join(map(repr, unknown))} in the results; "
                             f"losses are {', '.join(self.losses)}")
        return dataclasses.replace(self, as_baseline=frozenset(names))

    def scores(self, model: str, dataset: str, contestant: str, metric: str) -> np.ndarray | None:
        """Fold scores of a contestant: a loss name, or ``<loss>+tuned`` for its tuned-threshold scores."""
        loss, rule = (contestant[:-len("+tuned")], "tuned") if contestant.endswith("+tuned") else (contestant,
                                                                                                 "fixed")
        return self.values.get((model, dataset, loss, rule, metric))

    @classmethod
    def from_results(cls, results) -> ScoreTable:
        """From :class:`~metricc.experiments.protocol.DatasetResult` objects (any models)."""
        table = cls()
        for result in results:
            specs = {spec.name: spec for spec in result.losses}
            for run in result.folds:
                spec = specs[run.loss]
                for rule in ("fixed", "tuned"):
                    for metric, value in run.values(rule).items():
                        evaluator = result.evaluators[metric]
                        table.add(result.model, result.dataset, run.loss, spec.kind, spec.target, rule, metric,
                                  run.fold, value, evaluator.higher_is_better, evaluator.label)
        return table

    @classmethod
    def from_folds_csv(cls, paths: Iterable[Path]) -> ScoreTable:
        """From ``folds_<model>.csv`` files written by ``metricc experiment``."""
        table = cls()
        needed = {"model", "dataset", "loss", "kind", "target", "fold", "metric", "rule", "value",
                  "higher_is_better", "metric_label"}
        for path in paths:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = needed - set(reader.fieldnames or ())
                if missing:
                    raise ValueError(f"{path} is not a folds file of this metricc version "
                                     f"(no column(s) {', '.join(sorted(missing))})")
                for row in reader:
                    table.add(row["model"], row["dataset"], row["loss"], row["kind"], row["target"] or None,
                              row["rule"], row["metric"], int(row["fold"]) - 1, float(row["value"]),
                              row["higher_is_better"] == "1", row["metric_label"])
        if not table.values:
            raise ValueError("no fold scores found")
        return table


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One compiled loss against one baseline on one dataset (paired over folds)."""

    model: str
    rule: str
    loss: str
    metric: str
    baseline: str
    dataset: str
    loss_mean: float
    baseline_mean: float
    difference: float  # mean over folds of (loss − baseline), signed so that > 0 means the loss is better
    standard_error: float
    folds: int
    p_value: float  # Wilcoxon signed-rank over folds (NaN where undefined)
    outcome: str  # "win", "tie" or "loss"
    chosen: str  # the baseline actually compared with (for "best of (...)")


def paired_outcome(differences: np.ndarray, tie_rule: str = "se") -> tuple[str, float, float]:
    """("win" | "tie" | "loss", standard error, Wilcoxon p) of paired fold differences (> 0: better)."""
    d = np.asarray(differences, dtype=np.float64)
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.inf
    p = wilcoxon_p(d)
    if tie_rule == "se":
        if se == 0:
            outcome = "tie" if mean == 0 else ("win" if mean > 0 else "loss")
        else:
            outcome = "win" if mean > se else "loss" if mean < -se else "tie"
    elif tie_rule == "wilcoxon":
        outcome = "tie" if not p < 0.05 else ("win" if mean > 0 else "loss")
    else:
        raise ValueError(f"unknown tie rule {tie_rule!r}; choose one of {', '.join(TIE_RULES)}")
    return outcome, se, p


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of the differences; NaN if all are zero or there are fewer than 2."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2 or not np.any(d != 0):
        return math.nan
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue)


def contestants(table: ScoreTable, rule: str) -> list[str]:
    """The baselines a compiled loss meets under ``rule``: at the fixed threshold also their tuned versions."""
    tuned = [f"{b}+tuned" for b in table.baselines]
    return (list(table.baselines) + tuned) if rule == "fixed" else tuned


def compare(table: ScoreTable, tie_rule: str = "se") -> list[Comparison]:
    """Every comparison of the summary (including the "best of (...)" goal baseline)."""
    out: list[Comparison] = []
    for model in table.models:
        for rule in ("fixed", "tuned"):
            own = "" if rule == "fixed" else "+tuned"
            for loss in table.compiled:
                metric = table.targets[loss]
                sign = 1.0 if table.higher.get(metric, True) else -1.0
                for dataset in table.datasets:
                    mine = table.scores(model, dataset, loss + own, metric)
                    if mine is None:
                        continue
                    pool = contestants(table, rule)
                    for baseline in pool:
                        theirs = table.scores(model, dataset, baseline, metric)
                        if theirs is not None:
                            out.append(_comparison(model, rule, loss, metric, baseline, baseline, dataset, mine,
                                                   theirs, sign, tie_rule))
                    goal = [b for b in GOAL_SET[rule] if b in pool]
                    if len(goal) == len(GOAL_SET[rule]):
                        # Means equal to 12 decimals tie; the first of GOAL_SET's order wins the tie.
                        means = {b: round(sign * float(np.mean(table.scores(model, dataset, b, metric))), 12)
                                 for b in goal}
                        chosen = max(goal, key=lambda b: means[b])
                        out.append(_comparison(model, rule, loss, metric, goal_name(rule), chosen, dataset, mine,
                                               table.scores(model, dataset, chosen, metric), sign, tie_rule))
    return out


def goal_name(rule: str) -> str:
    return f"best of ({', '.join(GOAL_SET[rule])})"


def _comparison(model, rule, loss, metric, name, chosen, dataset, mine, theirs, sign, tie_rule) -> Comparison:
    if mine.shape != theirs.shape:
        raise ValueError(f"{model}/{dataset}: {loss} and {chosen} have different numbers of folds")
    d = sign * (mine - theirs)
    outcome, se, p = paired_outcome(d, tie_rule)
    return Comparison(model, rule, loss, metric, name, dataset, float(mine.mean()), float(theirs.mean()),
                      float(d.mean()), se, int(d.size), p, outcome, chosen)


@dataclasses.dataclass(frozen=True)
class Tally:
    """Wins, ties and losses of one compiled loss against one baseline across datasets."""

    model: str
    rule: str
    loss: str
    metric: str
    baseline: str
    wins: int
    ties: int
    losses: int
    better_mean: int  # AnyLoss's form: datasets where the loss's mean beats the baseline's
    datasets: int
    across_p: float  # Wilcoxon over the per-dataset mean differences
    median_difference: float

    @property
    def cell(self) -> str:
        return f"{self.wins}/{self.ties}/{self.losses}"


def tally(comparisons: list[Comparison]) -> list[Tally]:
    groups: dict[tuple, list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault((c.model, c.rule, c.loss, c.metric, c.baseline), []).append(c)
    out = []
    for (model, rule, loss, metric, baseline), items in groups.items():
        diffs = np.array([c.difference for c in items])
        out.append(Tally(model, rule, loss, metric, baseline, sum(c.outcome == "win" for c in items),
                         sum(c.outcome == "tie" for c in items), sum(c.outcome == "loss" for c in items),
                         int(np.sum(diffs > 0)), len(items), wilcoxon_p(diffs) if len(items) >= 6 else math.nan,
                         float(np.median(diffs))))
    return out


def best_of_all(table: ScoreTable, rule: str) -> dict[tuple[str, str], tuple[int, int]]:
    """AnyLoss's form: per (model, loss), on how many datasets its mean beats every baseline's (same rule)."""
    own = "" if rule == "fixed" else "+tuned"
    pool = [b + own for b in table.baselines]
    out = {}
    for model in table.models:
        for loss in table.compiled:
            metric = table.targets[loss]
            sign = 1.0 if table.higher.get(metric, True) else -1.0
            wins = total = 0
            for dataset in table.datasets:
                mine = table.scores(model, dataset, loss + own, metric)
                theirs = [table.scores(model, dataset, b, metric) for b in pool]
                if mine is None or not pool or any(t is None for t in theirs):
                    continue
                total += 1
                wins += all(sign * mine.mean() > sign * t.mean() for t in theirs)
            out[(model, loss)] = (wins, total)
    return out


@dataclasses.dataclass(frozen=True)
class GoalLine:
    model: str
    rule: str
    loss: str
    cases: int
    beats_bce_mse: int  # wins (tie rule) against both
    beats_bce_mse_mean: int  # better mean than both
    at_least_best: int  # not a loss against the best of the goal set


def goal(comparisons: list[Comparison]) -> list[GoalLine]:
    """The issue's goal per (model, rule, loss): beats BCE and MSE; at least as good as the best of the goal set."""
    by_case: dict[tuple, dict[str, Comparison]] = {}
    for c in comparisons:
        by_case.setdefault((c.model, c.rule, c.loss, c.dataset), {})[c.baseline] = c
    lines: dict[tuple, list[int]] = {}
    for (model, rule, loss, _), found in by_case.items():
        beat = [found.get(b) for b in GOAL_BEAT[rule]]
        best = found.get(goal_name(rule))
        if any(b is None for b in beat) or best is None:
            continue
        counts = lines.setdefault((model, rule, loss), [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += all(b.outcome == "win" for b in beat)
        counts[2] += all(b.difference > 0 for b in beat)
        counts[3] += best.outcome != "loss"
    return [GoalLine(m, r, loss, *counts) for (m, r, loss), counts in lines.items()]


def _percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "n/a"


def _p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}" if value >= 0.001 else "<0.001"


def _write_tally_table(out, table, rows, baselines, loss_header, loss_label, cell_text) -> None:
    """One Markdown table of tallies: a row per (model, compiled loss), a column per baseline."""
    out.write(f"| model | {loss_header} | " + " | ".join(f"vs {b}" for b in baselines) + " |\n")
    out.write("|---|---|" + "---:|" * len(baselines) + "\n")
    for model in table.models:
        for loss in table.compiled:
            cells = {t.baseline: t for t in rows if t.model == model and t.loss == loss}
            if cells:
                out.write(f"| {model} | {loss_label(loss)} | " + " | ".join(
                    cell_text(cells[b]) if b in cells else "" for b in baselines) + " |\n")


def summary_markdown(table: ScoreTable, comparisons: list[Comparison], tie_rule: str, *,
                     command: str | None = None, main_rule: str = "fixed") -> str:
    tallies = tally(comparisons)
    out = io.StringIO()
    out.write("# Summary: compiled losses against baselines across datasets\n\n")
    if command:
        out.write(f"Command: `{command}`\n\n")
    folds = sorted({c.folds for c in comparisons})
    out.write(f"{len(table.datasets)} datasets ({', '.join(table.datasets)}); models: {', '.join(table.models)}; "
              f"{'/'.join(map(str, folds))} folds. Each cell: **wins/ties/losses** of the compiled loss against "
              "the baseline, on the metric the loss was compiled for, counted over datasets. ")
    if tie_rule == "se":
        out.write("A dataset is a tie when the mean of the paired fold differences lies within one standard "
                  "error (sd/√k) of 0 (`--tie-rule se`). ")
    else:
        out.write("A dataset is a tie unless the Wilcoxon signed-rank test over the paired fold differences "
                  "gives p < 0.05 (`--tie-rule wilcoxon`)" + ("; with 5 folds or fewer it cannot, so every "
                                                               "dataset ties. " if max(folds) <= 5 else ". "))
    out.write("'+tuned': the baseline evaluated at the threshold that maximises the metric on its training fold. "
              "'better mean' is the AnyLoss paper's form (\"wins on 90 of 102 datasets\"): datasets where the "
              "loss's mean beats the baseline's, ties not counted. 'p across': Wilcoxon signed-rank test over the "
              "per-dataset mean differences (n/a below 6 datasets).\n")
    for rule in ("fixed", "tuned"):
        rows = [t for t in tallies if t.rule == rule]
        if not rows:
            continue
        marker = " (the main tables' rule)" if rule == main_rule else ""
        out.write(f"\n## Compiled loss at the {RULE_TITLES[rule]}{marker}\n\n")
        baselines = list(dict.fromkeys(t.baseline for t in rows))
        _write_tally_table(out, table, rows, baselines, "loss (metric)",
                           lambda loss: f"{loss} ({table.labels.get(table.targets[loss], table.targets[loss])})",
                           lambda cell: cell.cell)
        out.write("\nAnyLoss's form (better mean on X of N datasets), median of the per-dataset mean differences, "
                  "and the Wilcoxon p across datasets:\n\n")
        _write_tally_table(out, table, rows, baselines, "loss", str,
                           lambda cell: (f"{cell.better_mean} of {cell.datasets}; {cell.median_difference:+.3f}; "
                                         f"p {_p(cell.across_p)}"))
        best = best_of_all(table, rule)
        if table.baselines:
            out.write(f"\nBetter mean than every baseline ({', '.join(table.baselines)}"
                      f"{' at their tuned thresholds' if rule == 'tuned' else ''}) on: " + "; ".join(
                          f"{model}/{loss} {wins} of {total}" for (model, loss), (wins, total) in best.items())
                      + " datasets.\n")
    lines = goal(comparisons)
    out.write("\n## Goal\n\n")
    if not lines:
        out.write("Not evaluated: the goal needs bce, mse, wbce and focal in --losses.\n")
    else:
        out.write("Goal: the compiled loss for M beats BCE and MSE on M in ≥ 90 % of (table, model, metric) "
                  "cases and is at least as good as the best of weighted BCE, focal loss and BCE with a tuned "
                  "threshold (a win or a tie against it) in ≥ 60 % of them. 'Beats' is counted twice: as a win "
                  "under the tie rule against both, and as a better mean than both.\n\n")
        out.write("| threshold rule | model | loss | cases | beats BCE and MSE (wins) | beats BCE and MSE "
                  "(better mean) | at least as good as the best of the three |\n|---|---|---|---:|---:|---:|---:|\n")
        for rule in ("fixed", "tuned"):
            subset = [g for g in lines if g.rule == rule]
            for g in subset:
                out.write(f"| {rule} | {g.model} | {g.loss} | {g.cases} | {_percent(g.beats_bce_mse, g.cases)} | "
                          f"{_percent(g.beats_bce_mse_mean, g.cases)} | {_percent(g.at_least_best, g.cases)} |\n")
            if subset:
                total = [sum(getattr(g, f) for g in subset) for f in ("cases", "beats_bce_mse",
                                                                      "beats_bce_mse_mean", "at_least_best")]
                met = (total[0] and total[1] >= 0.9 * total[0], total[0] and total[3] >= 0.6 * total[0])
                out.write(f"| **{rule}** | **all** | | **{total[0]}** | **{_percent(total[1], total[0])}** "
                          f"{'(met)' if met[0] else '(not met)'} | **{_percent(total[2], total[0])}** | "
                          f"**{_percent(total[3], total[0])}** {'(met)' if met[1] else '(not met)'} |\n")
        out.write("\n")
    return out.getvalue()


def summary_csv(comparisons: list[Comparison]) -> str:
    """Aggregated counts: one row per (model, rule, loss, baseline)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "rule", "loss", "metric", "baseline", "wins", "ties", "losses", "better_mean",
                     "datasets", "median_difference", "wilcoxon_p_across_datasets"])
    for t in tally(comparisons):
        writer.writerow([t.model, t.rule, t.loss, t.metric, t.baseline, t.wins, t.ties, t.losses, t.better_mean,
                         t.datasets, f"{t.median_difference:.6f}",
                         "" if not math.isfinite(t.across_p) else f"{t.across_p:.6f}"])
    return out.getvalue()


def comparisons_csv(comparisons: list[Comparison]) -> str:
    """Every per-dataset comparison behind the counts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "rule", "loss", "metric", "baseline", "compared_with", "dataset", "loss_mean",
                     "baseline_mean", "difference", "standard_error", "folds", "wilcoxon_p_over_folds", "outcome"])
    for c in comparisons:
        writer.writerow([c.model, c.rule, c.loss, c.metric, c.baseline, c.chosen, c.dataset, f"{c.loss_mean:.6f}",
                         f"{c.baseline_mean:.6f}", f"{c.difference:.6f}", f"{c.standard_error:.6f}", c.folds,
                         "" if not math.isfinite(c.p_value) else f"{c.p_value:.6f}", c.outcome])
    return out.getvalue()


OUTCOME_COLORS = {"win": "#2e7d32", "tie": "#9e9e9e", "loss": "#c62828"}


def plot_summary(table: ScoreTable, comparisons: list[Comparison], path: Path, *, overwrite: bool = False) -> None:
    """Per dataset, the compiled loss's mean difference to the best baseline, sorted; one panel per
    (model, threshold rule) row and compiled loss column. Bars: green win, grey tie, red loss; whiskers ±SE.
    The best baseline is the goal's "best of (wbce, focal, bce+tuned)" where the run has them, else the
    best baseline by mean on each dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for model in table.models:
        for rule in ("fixed", "tuned"):
            for loss in table.compiled:
                items = _best_baseline_items(comparisons, model, rule, loss)
                if items:
                    panels.append((model, rule, loss, items))
    rows = sorted({(m, r) for m, r, _, _ in panels}, key=lambda k: (table.models.index(k[0]), k[1]))
    columns = list(dict.fromkeys(loss for _, _, loss, _ in panels))
    if not panels:
        return
    figure = Figure(figsize=(4.2 * len(columns), 3.2 * len(rows)), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for axis in axes.ravel():
        axis.set_visible(False)
    for model, rule, loss, (name, items) in panels:
        axis = axes[rows.index((model, rule))][columns.index(loss)]
        axis.set_visible(True)
        items = sorted(items, key=lambda c: c.difference)
        x = np.arange(len(items))
        colors = [OUTCOME_COLORS[c.outcome] for c in items]
        errors = [c.standard_error if math.isfinite(c.standard_error) else 0 for c in items]
        axis.bar(x, [c.difference for c in items], color=colors, yerr=errors, capsize=2, error_kw={"lw": 0.8})
        axis.axhline(0, color="black", lw=0.8)
        axis.set_xticks(x, [c.dataset for c in items], rotation=70, fontsize=6, ha="right")
        counts = {k: sum(c.outcome == k for c in items) for k in ("win", "tie", "loss")}
        label = table.labels.get(table.targets[loss], loss)
        axis.set_title(f"{loss} · {model.upper()} · {'tuned' if rule == 'tuned' else 'fixed'} threshold\n"
                       f"{counts['win']} W / {counts['tie']} T / {counts['loss']} L vs {name}", fontsize=8)
        axis.set_ylabel(f"Δ {label} (loss − baseline)", fontsize=7)
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_compact_png(figure, path, overwrite=overwrite)


def save_compact_png(figure, path: Path, colors: int = 64, *, overwrite: bool = False) -> None:
    """Save a figure as a PNG with an adaptive palette of ``colors`` colours: a third of the size, same look."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    from PIL import Image  # a dependency of matplotlib

    compact = io.BytesIO()
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colors).save(compact, format="png", optimize=True)
    write_file(path, compact.getvalue(), overwrite=overwrite)  # never through a link, never half-written


def _best_baseline_items(comparisons, model, rule, loss) -> tuple[str, list[Comparison]] | None:
    mine = [c for c in comparisons if c.model == model and c.rule == rule and c.loss == loss]
    goal_items = [c for c in mine if c.baseline == goal_name(rule)]
    if goal_items:
        return goal_name(rule), goal_items
    by_dataset: dict[str, Comparison] = {}
    for c in mine:  # the strongest baseline per dataset: the smallest difference
        if c.dataset not in by_dataset or c.difference < by_dataset[c.dataset].difference:
            by_dataset[c.dataset] = dataclasses.replace(c, baseline="best baseline")
    return ("the best baseline", list(by_dataset.values())) if by_dataset else None


def write_summary(table: ScoreTable, out: Path, tie_rule: str = "se", *, command: str | None = None,
                  main_rule: str = "fixed", overwrite: bool = False) -> dict[str, Path]:
    """Write summary.md, summary.csv, comparisons.csv and summary.png into ``out``."""
    paths = summary_paths(out)
    comparisons = compare(table, tie_rule)
    out.mkdir(parents=True, exist_ok=True)
    for key, text in (("summary_md", summary_markdown(table, comparisons, tie_rule, command=command,
                                                      main_rule=main_rule)),
                      ("summary_csv", summary_csv(comparisons)), ("comparisons_csv", comparisons_csv(comparisons))):
        write_file(paths[key], text, overwrite=overwrite)
    if comparisons:
        plot_summary(table, comparisons, paths["summary_png"], overwrite=overwrite)
    return {key: path for key, path in paths.items() if path.exists()}


def summary_paths(out: Path) -> dict[str, Path]:
    return {"summary_md": out / "summary.md", "summary_csv": out / "summary.csv",
            "comparisons_csv": out / "comparisons.csv", "summary_png": out / "summary.png"}
