"""Multi-class relaxations, prototyped for measurement: soft predictions ŷ(z) of an (N, C) block of logits.

metricc's runtime offers two (``SoftmaxAmplifier``, the default, and the identity ŷ = softmax(z)). This
module writes those two and three other candidates plainly in PyTorch, so that they can be trained and
compared on equal terms (the metric, its average and ``zero_division`` come from one compiled loss; only
ŷ differs; see :class:`PrototypeMetricLoss`):

* ``amplifier:L=73``  ŷ = softmax(L/2 · softmax(z)): the runtime's default (AnyLoss's amplifier for C = 2);
* ``identity``        ŷ = softmax(z): the expected confusion matrix;
* ``tempered:beta=B`` ŷ = softmax(B·z): a tempered softmax on the logits;
* ``margin:L=L``      ŷ_c = σ(L/2 · (p_c − max_{k≠c} p_k)), p = softmax(z): one-vs-rest on the margin of
  each class over its strongest rival; for C = 2 it is AnyLoss's amplifier σ(L·(p₁ − 1/2)) again;
* ``ovr:L=L``         ŷ_c = σ(L · (p_c − 1/2)): the binary amplifier per class at threshold 1/2, the
  negative control of the issue (with three or more classes and p_max < 1/2 it predicts no class).

Every candidate but ``ovr`` tends to the one-hot argmax as it sharpens; :func:`closeness` measures how
near it is on a given batch.
"""

from __future__ import annotations

import dataclasses
import math

import torch

KINDS = ("amplifier", "identity", "tempered", "margin", "ovr")
OPTION = {"amplifier": "L", "tempered": "beta", "margin": "L", "ovr": "L"}
DEFAULT = {"amplifier": 73.0, "tempered": 1.0, "margin": 73.0, "ovr": 73.0}


@dataclasses.dataclass(frozen=True)
class SoftPrediction:
    """A multi-class relaxation: ``soft(logits)`` → ŷ of shape (N, C), values in [0, 1]."""

    kind: str
    scale: float | None = None

    @property
    def name(self) -> str:
        if self.kind == "identity":
            return "identity"
        return f"{self.kind}:{OPTION[self.kind]}={self.scale:g}"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return torch.softmax(logits, -1)
        if self.kind == "tempered":
            return torch.softmax(self.scale * logits, -1)
        p = torch.softmax(logits, -1)
        if self.kind == "amplifier":
            return torch.softmax(self.scale / 2 * p, -1)
        if self.kind == "ovr":
            return torch.sigmoid(self.scale * (p - 0.5))
        return torch.sigmoid(self.scale / 2 * margins(p))


def margins(p: torch.Tensor) -> torch.Tensor:
    """p_c − max_{k≠c} p_k for every class: the strongest rival is the top class, except for the top class
    itself, whose rival is the runner-up. Positive for the argmax only (0 for classes tied at the top)."""
    top = p.topk(2, dim=-1)
    rival = top.values[:, :1].expand_as(p).clone()
    rival.scatter_(1, top.indices[:, :1], top.values[:, 1:2])
    return p - rival


def parse_soft_prediction(text: str) -> SoftPrediction:
    """``amplifier:L=73``, ``identity``, ``tempered:beta=5``, ``margin:L=73``, ``ovr:L=73`` (options optional)."""
    kind, colon, option = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown multi-class relaxation {text!r}; choose one of {', '.join(KINDS)}")
    if kind == "identity":
        if colon:
            raise ValueError("identity takes no options")
        return SoftPrediction("identity")
    scale = DEFAULT[kind]
    if colon:
        key, equals, value = option.partition("=")
        if not equals or key.strip() != OPTION[kind]:
            raise ValueError(f"{kind} takes one option, {OPTION[kind]}=<number>; got {option!r}")
        try:
            scale = float(value)
        except ValueError:
            raise ValueError(f"{kind}: {OPTION[kind]} needs a number, got {value!r}") from None
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{kind}: {OPTION[kind]} must be a positive number, got {value!r}")
    return SoftPrediction(kind, scale)


class PrototypeMetricLoss(torch.nn.Module):
    """A compiled metric loss with a prototype relaxation: loss = M(ŷ(z), y), where M is metricc's loss of
    the metric compiled for ``task="multilabel"`` with the identity relaxation on probabilities (the
    one-vs-rest table Σ y·ŷ, Σ y·(1 − ŷ), ... per class, the average and ``zero_division``, with its
    closed-form gradient with respect to ŷ), and autograd differentiates ŷ(z). For ``amplifier`` and
    ``identity`` this is the runtime's own multi-class loss (the tests check value and gradient)."""

    def __init__(self, metric: str, num_classes: int, average: str, soft: SoftPrediction, params=None):
        super().__init__()
        import metricc

        self.soft = soft
        self.num_classes = num_classes
        self.table_loss = metricc.compile_metric(metric, params=params, task="multilabel", num_classes=num_classes,
                                                 average=average, relaxation="identity", from_logits=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predicted = self.soft(logits).clamp(0.0, 1.0)  # rounding can leave softmax a hair above 1
        return self.table_loss(predicted, one_hot(target, self.num_classes, logits.dtype))

    @property
    def per_class(self):
        return self.table_loss.per_class


def one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices as one-hot rows; (N, C) rows pass through."""
    if target.dim() == 2:
        return target.to(dtype)
    return torch.nn.functional.one_hot(target.long(), num_classes).to(dtype)


@torch.no_grad()
def closeness(soft: SoftPrediction, logits: torch.Tensor, target: torch.Tensor, table_loss) -> dict[str, float]:
    """How near the soft confusion matrix is to the argmax one on a batch.

    * ``mass_off_argmax``: the mean over samples of ½‖ŷ_i − e_argmax(z_i)‖₁, 0 when ŷ is the one-hot argmax
      (for a distribution, the share of ŷ not on the argmax; ``margin`` and ``ovr`` are not distributions);
    * ``entry_gap``: Σ_c (|TP_c − TP_c^argmax| + |FP_c − FP_c^argmax|) / (2N), the soft table's distance
      from the argmax table (FN and TN follow, as the labels are fixed); at most ``mass_off_argmax`` for a
      distribution, less where errors cancel within a sum;
    * ``metric_gap``: the compiled metric (``table_loss``: its average and zero_division) of the soft table
      minus that of the argmax table: what the loss sees against what is evaluated;
    * ``classes_predicted``: how many classes are the argmax of at least one row (a class no row predicts has
      "died": its recall is 0);
    * ``wrong_row_gradient``: the mean ‖∂loss/∂z_i‖₁ over misclassified rows divided by its mean over all rows:
      how much the loss still pushes the rows it gets wrong (near 0 where the relaxation saturates there).
    """
    predicted = soft(logits).clamp(0.0, 1.0)
    hard = one_hot(logits.argmax(-1), logits.shape[1], logits.dtype)
    y = one_hot(target, logits.shape[1], logits.dtype)
    mass = 0.5 * (predicted - hard).abs().sum(1).mean()

    def table(values):
        return torch.stack([(y * values).sum(0), (y * (1 - values)).sum(0), ((1 - y) * values).sum(0),
                            ((1 - y) * (1 - values)).sum(0)])

    difference = (table(predicted) - table(hard)).abs()
    entry_gap = (difference[0] + difference[2]).sum() / (2 * y.shape[0])
    soft_value = 1 - float(table_loss(predicted, y))
    hard_value = 1 - float(table_loss(hard, y))
    with torch.enable_grad():
        z = logits.detach().clone().requires_grad_(True)
        table_loss(soft(z).clamp(0.0, 1.0), y).backward()
    norms = z.grad.abs().sum(1)
    wrong = logits.argmax(-1) != y.argmax(-1)
    ratio = float(norms[wrong].mean() / norms.mean()) if bool(wrong.any()) and float(norms.mean()) > 0 else math.nan
    return {"mass_off_argmax": float(mass), "entry_gap": float(entry_gap), "metric_gap": soft_value - hard_value,
            "soft_metric": soft_value, "hard_metric": hard_value,
            "classes_predicted": int(logits.argmax(-1).unique().numel()), "wrong_row_gradient": ratio}


def summarize(directory) -> str:
    """A Markdown table of a ``--probe`` run's files (``multi_multiclass_<model>_runs.csv`` and ``_probes.csv``):
    per dataset and loss, the held-out macro-F1 and, on the training rows, the mean mass off the argmax at
    a few epochs, the soft-minus-argmax metric gap at the last epoch, and the same gap on the test rows."""
    import csv
    from pathlib import Path

    directory = Path(directory)
    lines = []
    for runs_path in sorted(directory.glob("multi_multiclass_*_runs.csv")):
        probes_path = runs_path.with_name(runs_path.name.replace("_runs.csv", "_probes.csv"))
        with open(runs_path) as handle:
            runs = list(csv.DictReader(handle))
        probes = []
        if probes_path.exists():
            with open(probes_path) as handle:
                probes = list(csv.DictReader(handle))
        epochs = sorted({int(p["epoch"]) for p in probes if p["rows"] == "train"})
        shown = [e for e in (1, 10, epochs[-1] if epochs else None) if e in epochs]
        header = (["dataset", "loss", "macro-F1 (test)"] + [f"off-argmax mass, epoch {e}" for e in shown]
                  + ["metric gap (train, last)", "metric gap (test)", "wrong-row gradient (train, epoch 10)",
                     "classes predicted (test)"])
        lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
        for dataset in dict.fromkeys(r["dataset"] for r in runs):
            for loss in dict.fromkeys(r["loss"] for r in runs if r["dataset"] == dataset):
                scores = [float(r["macro-f1"]) for r in runs if r["dataset"] == dataset and r["loss"] == loss]
                cells = [dataset, loss, _mean_sd(scores)]
                mine = [p for p in probes if p["dataset"] == dataset and p["loss"] == loss]
                for epoch in shown:
                    cells.append(_mean_sd([float(p["mass_off_argmax"]) for p in mine
                                           if p["rows"] == "train" and int(p["epoch"]) == epoch]))
                if shown:
                    cells.append(_mean_sd([float(p["metric_gap"]) for p in mine
                                           if p["rows"] == "train" and int(p["epoch"]) == epochs[-1]], signed=True))
                    cells.append(_mean_sd([float(p["metric_gap"]) for p in mine if p["rows"] == "test"], signed=True))
                    cells.append(_mean_sd([float(p["wrong_row_gradient"]) for p in mine
                                           if p["rows"] == "train" and int(p["epoch"]) == 10
                                           and p.get("wrong_row_gradient", "nan") != "nan"]))
                    cells.append(_mean_sd([float(p["classes_predicted"]) for p in mine if p["rows"] == "test"
                                           and p.get("classes_predicted")], digits=1))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _mean_sd(values, signed=False, digits=3) -> str:
    import statistics

    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.{digits}f} ± {spread:.{digits}f}"


if __name__ == "__main__":  # python -m metricc.experiments.multiclass_relaxations DIR
    import sys

    print(summarize(sys.argv[1]))
