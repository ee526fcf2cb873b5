"""Ranking results across datasets: every loss on AUROC *and* average precision, against every baseline.

The run's summary (:mod:`.summary`) scores each compiled loss on the metric it was compiled for; for
ranking losses both score rows matter (a loss trained on AUROC may rank the top of the list worse), so
this table pairs every loss with every baseline on each score metric, with the summary's own rules
(paired fold differences, a tie within one standard error or by Wilcoxon over folds; the AnyLoss form
"better mean on X of N datasets"; Wilcoxon across datasets). Score metrics have no threshold, so the
fixed-threshold scores are the only ones read.

    python -m metricc.experiments.ranking_summary RESULTS_DIR [RESULTS_DIR ...] > ranking.md
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np

from .summary import ScoreTable, _p, paired_outcome, wilcoxon_p

SCORE_METRICS = ("auroc", "average_precision")


def tallies(table: ScoreTable, metric: str, model: str, tie_rule: str = "se") -> dict[tuple[str, str], dict]:
    """(loss, baseline) → wins, ties, losses, better-mean count, datasets, median difference, p across datasets."""
    out = {}
    for loss in table.losses:
        for baseline in table.baselines:
            if baseline == loss:
                continue
            outcomes, differences = [], []
            for dataset in table.datasets:
                mine = table.values.get((model, dataset, loss, "fixed", metric))
                theirs = table.values.get((model, dataset, baseline, "fixed", metric))
                if mine is None or theirs is None:
                    continue
                d = mine - theirs
                outcomes.append(paired_outcome(d, tie_rule)[0])
                differences.append(float(d.mean()))
            if outcomes:
                diffs = np.array(differences)
                out[(loss, baseline)] = {
                    "wins": outcomes.count("win"), "ties": outcomes.count("tie"), "losses": outcomes.count("loss"),
                    "better": int(np.sum(diffs > 0)), "datasets": len(outcomes),
                    "median": float(np.median(diffs)),
                    "p": wilcoxon_p(diffs) if len(diffs) >= 6 else math.nan}
    return out


def means_markdown(table: ScoreTable, metric: str, model: str) -> str:
    """Datasets × losses: the mean over folds, the best per dataset in bold (ties at 3 decimals share it)."""
    out = io.StringIO()
    out.write("| dataset | " + " | ".join(table.losses) + " |\n|---|" + "---:|" * len(table.losses) + "\n")
    ranks = {loss: [] for loss in table.losses}
    for dataset in table.datasets:
        means = {loss: table.values[(model, dataset, loss, "fixed", metric)].mean() for loss in table.losses
                 if (model, dataset, loss, "fixed", metric) in table.values}
        best = max(round(v, 3) for v in means.values())
        cells = [f"**{means[loss]:.3f}**" if round(means[loss], 3) == best else f"{means[loss]:.3f}"
                 for loss in table.losses]
        order = sorted(means.values(), reverse=True)
        for loss in table.losses:  # rank 1 = best; ties share the mean rank
            ranks[loss].append(np.mean([i + 1 for i, v in enumerate(order) if v == means[loss]]))
        out.write(f"| {dataset} | " + " | ".join(cells) + " |\n")
    out.write("| *mean rank* | " + " | ".join(f"*{np.mean(ranks[loss]):.2f}*" for loss in table.losses) + " |\n")
    return out.getvalue()


def tallies_markdown(table: ScoreTable, metric: str, model: str, tie_rule: str = "se") -> str:
    found = tallies(table, metric, model, tie_rule)
    out = io.StringIO()
    baselines = [b for b in table.baselines]
    out.write("| loss | " + " | ".join(f"vs {b}" for b in baselines) + " |\n|---|" + "---:|" * len(baselines) + "\n")
    for loss in table.losses:
        cells = []
        for baseline in baselines:
            t = found.get((loss, baseline))
            cells.append("—" if t is None else
                         f"{t['wins']}/{t['ties']}/{t['losses']}; {t['better']} of {t['datasets']}; "
                         f"{t['median']:+.3f}; p {_p(t['p'])}")
        out.write(f"| {loss} | " + " | ".join(cells) + " |\n")
    return out.getvalue()


def report(table: ScoreTable, tie_rule: str = "se") -> str:
    out = io.StringIO()
    for model in table.models:
        for metric in SCORE_METRICS:
            if not any(key[0] == model and key[4] == metric for key in table.values):
                continue
            label = table.labels.get(metric, metric)
            out.write(f"\n### {model.upper()}: {label}, mean over folds\n\n{means_markdown(table, metric, model)}")
            out.write(f"\n### {model.upper()}: {label}, each loss against each baseline\n\n"
                      "wins/ties/losses over datasets (paired fold differences, tie within one standard error); "
                      "better mean on X of N datasets; median of the per-dataset mean differences; Wilcoxon p "
                      "across datasets.\n\n")
            out.write(tallies_markdown(table, metric, model, tie_rule))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    directories = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    paths = [path for directory in directories for path in sorted(directory.glob("folds_*.csv"))]
    if not paths:
        print("usage: python -m metricc.experiments.ranking_summary RESULTS_DIR ...", file=sys.stderr)
        return 2
    print(report(ScoreTable.from_folds_csv(paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
