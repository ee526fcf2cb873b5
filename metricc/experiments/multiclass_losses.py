"""Losses of the multi-class and multi-label experiments: the baselines and the compiled metric losses.

Entries of ``--losses`` with ``--task multiclass`` or ``--task multilabel``, separated by commas:

* ``ce`` (multi-class): cross-entropy;
* ``wce`` (multi-class): cross-entropy with class weights n / (C·n_c) of the training rows
  (scikit-learn's ``class_weight="balanced"``);
* ``bce`` (multi-label): binary cross-entropy per label, averaged over all entries;
* ``bce-pw`` (multi-label): the same with ``pos_weight`` = n_negative / n_positive per label;
* ``sigmoidf1[:beta=B,eta=E]`` (multi-label): Bénédict et al.'s sigmoidF1 (see :class:`SigmoidF1`);
* ``[macro-|micro-|weighted-]<metric>[@<relaxation>]``: a catalog metric compiled by metricc for the
  task with that average (macro by default), e.g. ``macro-f1``, ``micro-f1``, ``macro-mcc``,
  ``weighted-f1@identity``. Relaxations: metricc's (``anyloss`` = the softmax amplifier for multi-class,
  ``identity``, ``sigmoid:L=30``; for multi-label also ``linear``, ``sol``), and for multi-class the
  prototypes of :mod:`.multiclass_relaxations` (``tempered:beta=5``, ``margin:L=73``, ``ovr:L=73``,
  ``amplifier:L=73``), which train through :class:`PrototypeMetricLoss`.

An entry's ``key=value`` options continue after a comma (``sigmoidf1:beta=1,eta=0``).
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime import AVERAGES
from .multiclass_relaxations import KINDS as PROTOTYPES
from .multiclass_relaxations import PrototypeMetricLoss, parse_soft_prediction

BASELINES = {"multiclass": ("ce", "wce"), "multilabel": ("bce", "bce-pw", "sigmoidf1")}
SIGMOIDF1_OPTIONS = {"beta": 1.0, "eta": 0.0}
_OPTION_PIECE = re.compile(r"^\s*[A-Za-z_]\w*\s*=\s*[^=@,]*$")


class TaskLossError(ValueError):
    """A ``--losses`` entry that cannot be understood for the task."""


@dataclasses.dataclass(frozen=True)
class TaskLoss:
    """A parsed entry. ``kind``: a baseline's name or ``"compiled"``; ``average``, ``metric`` and
    ``relaxation`` for compiled losses; ``options`` for sigmoidF1."""

    name: str
    kind: str
    metric: str | None = None
    average: str | None = None
    relaxation: str = "anyloss"
    options: tuple[tuple[str, float], ...] = ()

    @property
    def is_compiled(self) -> bool:
        return self.kind == "compiled"

    @property
    def is_prototype(self) -> bool:
        kind = self.relaxation.partition(":")[0].strip().lower()
        return self.is_compiled and kind in PROTOTYPES and kind != "identity"  # identity: the runtime's own

    @property
    def target(self) -> str | None:
        """The evaluation row this loss optimises (``macro-f1``, ...); sigmoidF1's is macro-F1."""
        if self.is_compiled:
            return f"{self.average}-{self.metric}"
        return "macro-f1" if self.kind == "sigmoidf1" else None


def split_entries(text: str) -> list[str]:
    """Split at commas; a ``key=value`` piece continues the entry before it when that one has options."""
    entries: list[str] = []
    for piece in text.split(","):
        if not piece.strip():
            continue
        if entries and _OPTION_PIECE.match(piece) and ":" in entries[-1]:
            entries[-1] = f"{entries[-1]},{piece.strip()}"
        else:
            entries.append(piece.strip())
    return entries


def parse_task_losses(text: str, task: str) -> list[TaskLoss]:
    """Parse ``--losses`` for ``task``; compiled entries are compiled once here, so errors come before training."""
    specs = [parse_task_loss(entry, task) for entry in split_entries(text)]
    if not specs:
        raise TaskLossError("--losses is empty")
    repeated = first_repeated(spec.name for spec in specs)
    if repeated is not None:
        raise TaskLossError(f"loss {repeated!r} is listed twice")
    return specs


def first_repeated(names) -> str | None:
    """The first (in sorted order) of the names that occur more than once, or None."""
    names = list(names)
    return min((name for name in names if names.count(name) > 1), default=None)


def parse_task_loss(entry: str, task: str) -> TaskLoss:
    from metricc.catalog import catalog

    text = entry.strip()
    head, colon, option_text = text.partition(":")
    baseline = head.strip().lower()
    every_baseline = {name for names in BASELINES.values() for name in names}
    if baseline in every_baseline and "@" not in text:
        if baseline not in BASELINES[task]:
            raise TaskLossError(f"loss {text!r} is a {_other(task)} baseline; for task={task!r} use "
                                f"{', '.join(BASELINES[task])}")
        options = {}
        if baseline == "sigmoidf1":
            options = dict(SIGMOIDF1_OPTIONS)
            options.update(_options(option_text, SIGMOIDF1_OPTIONS, text))
            if not options["beta"] > 0:
                raise TaskLossError(f"loss {text!r}: beta must be positive")
        elif colon:
            raise TaskLossError(f"loss {text!r}: {baseline} takes no options")
        return TaskLoss(text, baseline, options=tuple(options.items()))
    body, at, relaxation = text.partition("@")
    average, dash, metric = body.partition("-")
    if not dash or average not in AVERAGES:
        average, metric = "macro", body
    metric = metric.strip()
    if metric not in catalog():
        raise TaskLossError(f"unknown loss {text!r}; valid: {', '.join(BASELINES[task])}, "
                            "[macro-|micro-|weighted-]<catalog metric>[@relaxation] (e.g. macro-f1, micro-mcc)")
    relaxation = relaxation.strip() if at else "anyloss"
    name = f"{average}-{metric}" + (f"@{relaxation}" if at else "")
    spec = TaskLoss(name, "compiled", metric=metric, average=average, relaxation=relaxation)
    if spec.is_prototype and task != "multiclass":
        raise TaskLossError(f"loss {text!r}: the prototype relaxations are multi-class relaxations")
    try:  # compile once now: a metric that cannot serve as a loss, or a bad relaxation, fails before training
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_task_loss(spec, task, 3, None)
    except (ValueError, TypeError) as exc:
        raise TaskLossError(f"loss {text!r}: {str(exc).strip().splitlines()[0]}") from None
    return spec


def _other(task: str) -> str:
    return "multi-label" if task == "multiclass" else "multi-class"


def _options(text: str, allowed: dict[str, float], entry: str) -> dict[str, float]:
    options = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or key.strip() not in allowed:
            raise TaskLossError(f"loss {entry!r}: option {item!r} must be one of "
                                f"{', '.join(f'{k}=...' for k in allowed)}")
        if key.strip() in options:
            raise TaskLossError(f"loss {entry!r}: option {key.strip()!r} is given twice; give it once")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            raise TaskLossError(f"loss {entry!r}: {key.strip()} needs a number, got {value!r}") from None
    return options


def build_task_loss(spec: TaskLoss, task: str, num_classes: int, y_train: np.ndarray | None):
    """The loss (logits (N, C), targets) → scalar. ``y_train`` (class indices or 0/1 rows of the training
    rows) sets ``wce``'s class weights and ``bce-pw``'s positive weights."""
    if spec.kind == "ce":
        return F.cross_entropy
    if spec.kind == "wce":
        return ClassWeightedCrossEntropy(balanced_class_weights(_required(y_train, spec), num_classes))
    if spec.kind == "bce":
        return binary_cross_entropy
    if spec.kind == "bce-pw":
        y = _required(y_train, spec)
        positives = y.sum(0).astype(np.float64)
        return PositiveWeightedBCE((y.shape[0] - positives) / np.maximum(positives, 1.0))
    if spec.kind == "sigmoidf1":
        options = dict(spec.options)
        return SigmoidF1(beta=options["beta"], eta=options["eta"])
    if spec.is_prototype:
        return PrototypeMetricLoss(spec.metric, num_classes, spec.average, parse_soft_prediction(spec.relaxation))
    import metricc

    return metricc.compile_metric(spec.metric, task=task, num_classes=num_classes, average=spec.average,
                                  relaxation=spec.relaxation)


def _required(y_train, spec):
    if y_train is None:
        raise ValueError(f"{spec.name} needs the training labels")
    return np.asarray(y_train)


def balanced_class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (C·n_c) per class (scikit-learn's ``compute_class_weight("balanced")``); 1 for a class without rows."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1.0)), 1.0)


class ClassWeightedCrossEntropy:
    """``F.cross_entropy`` with a weight per class (the mean is over Σ w_{y_i}, as PyTorch defines it)."""

    def __init__(self, weights):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))

    def __call__(self, logits, target):
        return F.cross_entropy(logits, target, weight=self.weights.to(logits.dtype))


def binary_cross_entropy(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


class PositiveWeightedBCE:
    """BCE per label with ``pos_weight`` per label (n_negative / n_positive of the training rows)."""

    def __init__(self, pos_weight):
        self.pos_weight = torch.as_tensor(np.asarray(pos_weight, dtype=np.float64))

    def __call__(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype),
                                                  pos_weight=self.pos_weight.to(logits.dtype))


class SigmoidF1:
    """sigmoidF1 (Bénédict, Koops, Odijk, de Rijke, "sigmoidF1: A Smooth F1 Score Surrogate Loss for
    Multilabel Classification", TMLR 2022, arXiv:2108.10566), written from its definition:

        S(u) = 1 / (1 + exp(−β·(u + η)))       on the last layer's output u (the logits)
        tp_c = Σ_i S(u_ic)·y_ic,  fp_c = Σ_i S(u_ic)·(1 − y_ic),  fn_c = Σ_i (1 − S(u_ic))·y_ic
        loss = 1 − (1/C)·Σ_c 2·tp_c / (2·tp_c + fn_c + fp_c)

    (the paper's pseudo-code in its repository, gabriben/metrics-as-losses, README: the per-label sums
    over the batch, F1 per label, the mean over labels). β = 1, η = 0 is the plain sigmoid. The repository's
    PyTorch class applies a sigmoid to the logits *before* S (with S's defaults reducing to σ(σ(u))); we
    follow the paper's definition on the logits. Its 1e-16 in the denominator is left out: 2tp + fn + fp
    is a sum of positive terms wherever a label has a positive or S > 0, and a label with neither (all
    S(u) underflowed to 0 and no positives) gets F1 = 0 here, as scikit-learn's ``zero_division=0``.
    1 − S is computed as S(−·) of the mirrored argument, σ(−β(u + η)), so it keeps its precision.
    """

    def __init__(self, beta: float = 1.0, eta: float = 0.0):
        self.beta, self.eta = float(beta), float(eta)

    def __call__(self, logits, target):
        y = target.to(logits.dtype)
        argument = self.beta * (logits + self.eta)
        predicted, complement = torch.sigmoid(argument), torch.sigmoid(-argument)
        tp = (predicted * y).sum(0)
        fp = (predicted * (1 - y)).sum(0)
        fn = (complement * y).sum(0)
        denominator = 2 * tp + fn + fp
        f1 = torch.where(denominator > 0, 2 * tp / torch.where(denominator > 0, denominator, 1.0), 0.0)
        return 1 - f1.mean()
