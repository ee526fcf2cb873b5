"""The constraint experiments: the threshold rule, the group gap, and both tasks end to end on small tables."""

import csv
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from metricc.cli import main as cli_main  # noqa: E402
from metricc.experiments.constrained import CountsMetric, pick_threshold, read_records  # noqa: E402
from metricc.experiments.fairness import group_gap, read_fairness_records  # noqa: E402


def test_the_picked_threshold_is_the_best_training_objective_among_thresholds_that_satisfy_the_constraint():
    import metricc

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    logits = rng.normal(size=300) + 1.5 * y
    recall, precision = CountsMetric(metricc.parse("recall")), CountsMetric(metricc.parse("precision"))
    cut = pick_threshold(logits, y, recall, True, precision, ">=", 0.8)
    best = -1.0
    for candidate in np.unique(logits):  # every decision, by brute force
        predicted = logits >= candidate
        tp = int((predicted & (y == 1)).sum())
        if tp / predicted.sum() >= 0.8:
            best = max(best, tp / y.sum())
    predicted = logits > cut
    tp = int((predicted & (y == 1)).sum())
    assert tp / predicted.sum() >= 0.8 and tp / y.sum() == pytest.approx(best)
    # where no threshold satisfies it, the closest to satisfying it
    cut = pick_threshold(logits, y, recall, True, precision, ">=", 1.01)
    predicted = logits > cut
    assert (predicted & (y == 1)).sum() / predicted.sum() == 1.0


def test_the_group_gap_is_max_minus_min_of_the_groups_rates():
    y = np.array([1, 1, 0, 1, 1, 0, 1, 0])
    predicted = np.array([1, 0, 1, 1, 1, 0, 0, 0])
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert group_gap(y, predicted, groups, 3, "eo") == pytest.approx(1.0 - 0.0)  # TPR 1/2, 2/2, 0/1
    assert group_gap(y, predicted, groups, 3, "dp") == pytest.approx(2 / 3 - 0.0)


def _table(path, n=160, seed=0, protected=False):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "colour", *(["sex", "split"] if protected else []), "label"])
        for i in range(n):
            label = int(rng.random() < 0.35)
            sex = "F" if rng.random() < 0.4 else "M"
            shift = label * (1.5 if sex == "M" or not protected else 0.6)
            row = [f"{rng.normal() + shift:.4f}", f"{rng.normal() + 0.5 * shift:.4f}", rng.choice(["red", "blue"])]
            if protected:
                row += [sex, "train" if i < 0.7 * n else "test"]
            writer.writerow(row + [label])


def test_the_constrained_task_writes_records_a_summary_and_a_plot(tmp_path):
    table = tmp_path / "toy.csv"
    _table(table)
    out = tmp_path / "out"
    code = cli_main(["experiment", "--task", "constrained", "--data", str(table), "--constraint", "precision >= 0.7",
                     "--losses", "bce", "--folds", "2", "--epochs", "15", "--out", str(out), "-q"])
    assert code == 0
    records = read_records(out / "constrained_folds.csv")
    rules = {(r.method, r.rule) for r in records}
    assert rules == {("bce", "picked"), ("lagrangian", "own"), ("lagrangian", "picked"), ("lagrangian", "best")}
    assert all(r.level == 0.7 and r.sense == ">=" and math.isfinite(r.train_objective) for r in records)
    assert all(r.train_violation == 0 for r in records if r.rule == "picked" and r.method == "bce")
    summary = (out / "constrained_summary.md").read_text()
    assert "## precision >= 0.7" in summary and "| lagrangian/own |" in summary
    assert (out / "constrained.png").stat().st_size > 0
    assert cli_main(["experiment", "--task", "constrained", "--data", str(table), "--constraint", "precision >= 0.7",
                     "--out", str(out), "-q"]) == 2  # refuses to overwrite


def test_the_fairness_task_compares_the_lagrangian_with_its_peers(tmp_path):
    table = tmp_path / "people.csv"
    _table(table, n=200, protected=True)
    out = tmp_path / "out"
    methods = ["bce", "lagrangian", "bce+constraints"]
    try:
        import fairlearn  # noqa: F401

        methods.append("fairlearn-to")
    except ImportError:
        pass
    code = cli_main(["experiment", "--task", "fairness", "--data", str(table), "--protected", "sex", "--gap", "eo,dp",
                     "--levels", "0.05", "--runs", "2", "--epochs", "15", "--methods", ",".join(methods),
                     "--out", str(out), "-q"])
    assert code == 0
    records = read_fairness_records(out / "fairness_runs.csv")
    assert {r.method for r in records} == set(methods) and {r.gap for r in records} == {"eo", "dp"}
    assert len(records) == 2 * 2 * len(methods)
    assert all(0 <= r.test_gap <= 1 and 0 <= r.test_accuracy <= 1 for r in records)
    assert "## sex: equal opportunity" in (out / "fairness_summary.md").read_text()
    assert cli_main(["experiment", "--task", "fairness", "--data", str(table), "--gap", "xx", "--out",
                     str(tmp_path / "o2"), "-q"]) == 2
