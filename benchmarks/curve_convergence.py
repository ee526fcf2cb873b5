"""How fast AUROC and average precision compiled from soft confusion tables approach scikit-learn's.

The compiled metric on scores p with a sigmoid relaxation σ(L·(p − t)) over T inner thresholds,
against ``roc_auc_score`` and ``average_precision_score`` on the same scores (docs/curves.md).

    python benchmarks/curve_convergence.py
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import metricc


def main() -> None:
    warnings.simplefilter("ignore", metricc.MetricWarning)
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(2000, generator=generator) < 0.3).long()
    scores = torch.sigmoid(torch.randn(2000, generator=generator, dtype=torch.float64) + 1.2 * labels)
    exact = {"auroc": roc_auc_score(labels, scores), "average_precision": average_precision_score(labels, scores)}
    print("| metric | inner thresholds T | L = 50 | L = 200 | L = 800 | L = 3200 |")
    print("|---|---|---|---|---|---|")
    for name in exact:
        for inner in (9, 19, 39, 79, 159, 319):
            errors = []
            for scale in (50, 200, 800, 3200):
                loss_fn = metricc.compile_metric(name, relaxation=metricc.Sigmoid(L=float(scale)), from_logits=False,
                                                 thresholds=np.linspace(0, 1, inner + 2).tolist())
                errors.append(1 - loss_fn(scores, labels).item() - exact[name])
            print(f"| {name} | {inner} | " + " | ".join(f"{e:+.1e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
