"""Soundness of ``metricc.analyze`` on random expressions of the grammar.

Every claim the report makes is checked against the metric itself, evaluated at
high precision on sampled confusion matrices: a stated range contains every value,
a stated Lipschitz bound exceeds every finite-difference slope along a batch, a
stated direction agrees with every step along a batch, and the analysis keeps to
its time budget.
"""

import time

import metricc


def test_analysis_of_min_over_rates_keeps_its_time_budget():
    # Regression: lambdify printed the Heaviside of d/dx min(...) through sympy's logic
    # simplifier, outside any budget: 10 to 30 s for this metric.
    started = time.monotonic()
    report = metricc.analyze("min(TP/P, TN/N, PP/n)")
    assert time.monotonic() - started < 5.0
    assert report.range[0] == 0.0
