"""Tables and plots of the constrained and fairness experiments (docs/constraints.md shows them).

For "objective subject to a constraint": per constraint, each method's held-out objective and how often the
constraint holds on the held-out fold within ``HOLD_TOLERANCE`` of its level, per table and over all tables, and
the Lagrangian against the best peer at equal or larger violation. For fairness: accuracy and gap per
method and level, and the Pareto plot of test accuracy against test gap.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np

from .constrained import HOLD_TOLERANCE, LAGRANGIAN, Record


def _mean(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _cell(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _columns(records: list[Record]) -> list[str]:
    """Methods with their rule, baselines first, in order of appearance."""
    seen = dict.fromkeys(f"{r.method}/{r.rule}" for r in records)
    return sorted(seen, key=lambda name: (name.startswith(LAGRANGIAN), list(seen).index(name)))


def constrained_summary(records: list[Record], command: str = "") -> str:
    """The Markdown summary (see the module docstring)."""
    lines = ["# Objective subject to a constraint: held-out results", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"A constraint *holds* on a held-out fold when its value there misses the level by at most "
              f"{HOLD_TOLERANCE:g}. `picked`: the threshold picked on the training fold (the best training objective "
              "among thresholds that satisfy the constraint there); `own`: 0.5, the Lagrangian's last iterate; "
              "`best`: 0.5, the Lagrangian's best iterate on the training fold.", ""]
    for constraint in dict.fromkeys(r.constraint for r in records):
        chosen = [r for r in records if r.constraint == constraint]
        columns = _columns(chosen)
        by = collections.defaultdict(list)
        for r in chosen:
            by[(r.dataset, f"{r.method}/{r.rule}")].append(r)
        datasets = list(dict.fromkeys(r.dataset for r in chosen))
        lines += [f"## {constraint}", "", "Held-out objective (mean over folds) and the share of folds where the "
                  "constraint holds on the held-out fold.", "",
                  "| table | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for dataset in datasets:
            cells = []
            for column in columns:
                runs = by[(dataset, column)]
                cells.append(f"{_cell(_mean(r.test_objective for r in runs))} "
                             f"({100 * np.mean([r.holds for r in runs]):.0f} %)" if runs else "–")
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        lines += ["", "Over all tables and folds:", "",
                  "| method | objective (test) | constraint (test) | holds on test | holds on training | "
                  "violation (test, mean) |", "|---|---:|---:|---:|---:|---:|"]
        for column in columns:
            runs = [r for r in chosen if f"{r.method}/{r.rule}" == column]
            holds = 100 * np.mean([r.holds for r in runs])
            lines.append(f"| {column} | {_cell(_mean(r.test_objective for r in runs))} | "
                         f"{_cell(_mean(r.test_value for r in runs))} | {holds:.0f} % | "
                         f"{100 * np.mean([r.train_violation == 0 for r in runs]):.0f} % | "
                         f"{_cell(_mean(r.test_violation for r in runs))} |")
        lines += ["", *_against_best_peer(by, datasets, columns), ""]
    return "\n".join(lines) + "\n"


def _against_best_peer(by, datasets, columns) -> list[str]:
    """Each Lagrangian rule against, per table, the best baseline at equal or larger violation: the baseline with
    the best held-out objective among those whose mean held-out violation is at least ours minus the tolerance.
    Wins, ties (paired fold difference within one standard error) and losses; "violates more" where every
    baseline violates less; tables where no method holds the constraint on any fold are left out."""
    peers = [c for c in columns if not c.startswith(LAGRANGIAN)]
    ours = [c for c in columns if c.startswith(LAGRANGIAN)]
    if not peers or not ours:
        return []
    lines = ["Against the best peer at equal or larger held-out violation (per table; tie: the mean paired fold "
             "difference within one standard error; left out: tables where no method holds on any fold):", "",
             "| method | wins | ties | losses | violates more | left out |", "|---|---:|---:|---:|---:|---:|"]
    for column in ours:
        tally = collections.Counter()
        for dataset in datasets:
            mine = sorted(by[(dataset, column)], key=lambda r: r.fold)
            if not mine:
                continue
            if not any(r.holds for c in columns for r in by[(dataset, c)]):
                tally["out"] += 1
                continue
            violation = _mean(r.test_violation for r in mine)
            eligible = [p for p in peers if by[(dataset, p)]
                        and _mean(r.test_violation for r in by[(dataset, p)]) >= violation - HOLD_TOLERANCE]
            if not eligible:
                tally["more"] += 1
                continue
            best = max(eligible, key=lambda p: _mean(r.test_objective for r in by[(dataset, p)]))
            theirs = sorted(by[(dataset, best)], key=lambda r: r.fold)
            differences = np.array([a.test_objective - b.test_objective for a, b in zip(mine, theirs)])
            differences = differences[np.isfinite(differences)]
            if differences.size == 0:
                continue
            se = differences.std(ddof=1) / math.sqrt(differences.size) if differences.size > 1 else 0.0
            mean = differences.mean()
            tally["tie" if abs(mean) <= se else "win" if mean > 0 else "loss"] += 1
        lines.append(f"| {column} | {tally['win']} | {tally['tie']} | {tally['loss']} | {tally['more']} | "
                     f"{tally['out']} |")
    return lines


def plot_constrained(records: list[Record], path: Path) -> None:
    """Held-out objective against held-out violation, one point per (table, method), one panel per constraint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    constraints = list(dict.fromkeys(r.constraint for r in records))
    figure, axes = plt.subplots(1, len(constraints), figsize=(6 * len(constraints), 4.5), squeeze=False)
    for axis, constraint in zip(axes[0], constraints):
        chosen = [r for r in records if r.constraint == constraint]
        for column in _columns(chosen):
            points = collections.defaultdict(list)
            for r in chosen:
                if f"{r.method}/{r.rule}" == column:
                    points[r.dataset].append(r)
            x = [_mean(r.test_violation for r in runs) for runs in points.values()]
            y = [_mean(r.test_objective for r in runs) for runs in points.values()]
            axis.scatter(x, y, label=column, marker="o" if column.startswith(LAGRANGIAN) else "x", alpha=0.8)
        axis.axvline(HOLD_TOLERANCE, color="grey", linestyle=":", linewidth=1)
        axis.set_title(constraint)
        axis.set_xlabel("held-out violation (mean over folds)")
        axis.set_ylabel("held-out objective (mean over folds)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _level_key(level: float):
    """A level as a grouping key: NaN (a method without one) equals itself."""
    return "none" if math.isnan(level) else level


def fairness_summary(records, command: str = "") -> str:
    from .fairness import GAP_NAMES
    from .fairness import HOLD_TOLERANCE as FAIR_TOLERANCE

    lines = ["# Accuracy under a fairness constraint: results on the official test rows", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"Mean ± standard deviation over runs (random 80 % subsets of the training rows). *Holds*: the test gap "
              f"is at most the level + {FAIR_TOLERANCE:g}. fairret's level is its strength, not a bound.", ""]
    for key in dict.fromkeys((r.protected, r.gap) for r in records):
        chosen = [r for r in records if (r.protected, r.gap) == key]
        lines += [f"## {key[0]}: {GAP_NAMES[key[1]]}", "",
                  "| method | level | test accuracy | test gap | holds | training gap | seconds |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        groups = collections.defaultdict(list)
        for r in chosen:
            groups[(r.method, _level_key(r.level))].append(r)
        for (method, _), runs in groups.items():
            level = runs[0].level
            accuracy = [r.test_accuracy for r in runs]
            gap = [r.test_gap for r in runs]
            holds = f"{100 * np.mean([r.holds for r in runs]):.0f} %" if math.isfinite(level) and \
                method != "fairret" else "–"
            lines.append(f"| {method} | {'–' if not math.isfinite(level) else f'{level:g}'} | "
                         f"{np.mean(accuracy):.4f} ± {np.std(accuracy):.4f} | {np.mean(gap):.4f} ± {np.std(gap):.4f} | "
                         f"{holds} | {_cell(_mean(r.train_gap for r in runs), 4)} | "
                         f"{np.mean([r.seconds for r in runs]):.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_fairness(records, path: Path) -> None:
    """Test accuracy against test gap, one line per method over its levels, one panel per (attribute, gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fairness import GAP_NAMES

    keys = list(dict.fromkeys((r.protected, r.gap) for r in records))
    figure, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for axis, key in zip(axes[0], keys):
        chosen = [r for r in records if (r.protected, r.gap) == key]
        for method in dict.fromkeys(r.method for r in chosen):
            levels = list(dict.fromkeys(_level_key(r.level) for r in chosen if r.method == method))
            x, y, xe, ye = [], [], [], []
            for level in levels:
                runs = [r for r in chosen if r.method == method and _level_key(r.level) == level]
                x.append(np.mean([r.test_gap for r in runs]))
                y.append(np.mean([r.test_accuracy for r in runs]))
                xe.append(np.std([r.test_gap for r in runs]))
                ye.append(np.std([r.test_accuracy for r in runs]))
            axis.errorbar(x, y, xerr=xe, yerr=ye, marker="o", capsize=2, label=method,
                          linestyle="-" if len(x) > 1 else "none")
        axis.set_title(f"{key[0]}: {GAP_NAMES[key[1]]}")
        axis.set_xlabel("test gap (max − min over groups)")
        axis.set_ylabel("test accuracy")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


__all__ = ["constrained_summary", "fairness_summary", "plot_constrained", "plot_fairness"]
