"""Loss names for experiments: the baselines, the compiled metric losses and training recipes.

Entries of ``--losses``, separated by commas (or by semicolons, see below):

* ``bce``: binary cross-entropy on the logit;
* ``mse``: mean squared error of σ(logit) against the label (the paper's delta-rule baseline);
* ``wbce``: BCE with the positives weighted by n_negative / n_positive of the training fold;
* ``focal``: focal loss (Lin et al. 2017), γ = 2, α = 0.25 as in the paper; ``focal:gamma=1,alpha=0.5``;
* ``lee-fbeta``: Lee, Yang & Yoo's (2021) surrogate Fβ loss, β = 1; ``lee-fbeta:beta=2``
  (``per_class=0``: averaged over all samples instead of per class);
* ``wmw``: the Wilcoxon-Mann-Whitney pairwise surrogate, 1 − mean σ(β·(z₊ − z₋)) over (positive, negative)
  pairs of the batch (all pairs up to ``max_pairs``, else that many drawn); ``wmw:scale=2,max_pairs=65536``;
* ``wmw-hinge``: Yan et al.'s squared-hinge WMW surrogate over all pairs in O(N log N); ``wmw-hinge:margin=1``;
* ``auc-m``: LibAUC's AUC-M (margin) loss with its variables a, b, α; ``auc-m:margin=1,step=0.1``
  (the three ranking baselines are defined in :mod:`metricc.experiments.ranking`);
* ``<metric>``: a catalog metric compiled by metricc with the AnyLoss relaxation (L = 73, t = 0.5);
* ``sol-<metric>``: the same metric with the score-oriented relaxation in the AnyLoss paper's
  setting (raised cosine, μ = 0.5, δ = 0.1);
* ``<metric>@<relaxation>``: any relaxation metricc understands, e.g. ``f1@linear``,
  ``f1@sigmoid:L=30,threshold=0.4``, ``f1@sol:distribution=uniform``;
* ``<name>=<expression>``: a user's metric, e.g. ``myf=2*TP/(2*TP+FP+FN)``, optionally with a
  relaxation (``myf=2*TP/(2*TP+FP+FN)@linear``); parameters come from ``--param NAME=VALUE``.
  The name labels the column and the evaluation row; it must be a Python identifier and no
  catalog or baseline name.

Any entry may end with a training recipe in square brackets, e.g. ``f1[warmup=10]``:
``mix=λ`` trains on (1 − λ)·loss + λ·BCE; ``warmup=k`` trains on BCE for the first k epochs;
``lr=``, ``batch=`` (rows, or a fraction of the fold such as 0.5) and ``epochs=`` override the
settings for this loss only.

Splitting rule (unambiguous): entries are split at commas outside parentheses and brackets.
A piece ``key=value`` directly after an entry that ends in options (``@relaxation:...``,
``focal:...``, ``lee-fbeta:...``) continues that entry when ``key`` is one of its option
names (``L threshold delta mu distribution``; ``gamma alpha``; ``beta per_class``); any other
``name=...`` starts a user's metric. If the value contains a semicolon, entries are split at
semicolons only and commas never split, so ``"f1@sigmoid:L=30,threshold=0.4; threshold=TP/P"``
is one relaxed F1 and a user metric named ``threshold``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import keyword
import math
import re
import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from ..runtime import ESTIMATORS

BASELINES = ("bce", "mse", "wbce", "focal", "lee-fbeta", "wmw", "wmw-hinge", "auc-m")
BASELINE_OPTIONS = {"focal": {"gamma": 2.0, "alpha": 0.25}, "lee-fbeta": {"beta": 1.0, "per_class": 1.0},
                    "wmw": {"scale": 1.0, "max_pairs": float(1 << 16)}, "wmw-hinge": {"margin": 1.0},
                    "auc-m": {"margin": 1.0, "step": 0.1}}
RANKING_BASELINES = ("wmw", "wmw-hinge", "auc-m")  # their target is AUROC (the ranking rows)
RECIPE_OPTIONS = ("mix", "warmup", "lr", "batch", "epochs")
SOL_PREFIX = "sol-"
PAPER_SOL = "sol:distribution=cosine,mu=0.5,delta=0.1"  # AnyLoss Tables 17/18: S(cosine/mu:0.5/delta=0.1)

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LossNameError(ValueError):
    """A ``--losses`` entry that cannot be understood; the message names the entry and what is valid."""


def _relaxation_option_names() -> frozenset[str]:
    """Option names of metricc's public relaxation classes (the keys of ``name:key=value`` text)."""
    import metricc

    names: set[str] = set()
    for cls in (metricc.Sigmoid, metricc.Linear, metricc.Identity, metricc.ScoreOriented):
        names.update(inspect.signature(cls).parameters)
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A parsed ``--losses`` entry.

    Attributes:
        name: the column header: the entry as written, or for ``label=expression`` the label
            (with ``@relaxation`` and ``[recipe]`` if given).
        kind: ``"bce"``, ``"mse"``, ``"wbce"``, ``"focal"``, ``"lee-fbeta"``, ``"wmw"``, ``"wmw-hinge"``,
            ``"auc-m"`` or ``"compiled"``.
        metric: what ``metricc.compile_metric`` gets (a catalog name or a user's expression);
            None for baselines.
        relaxation: the relaxation spec passed to ``metricc.compile_metric``.
        family: ``"anyloss"``, ``"sol"``, another relaxation name, or ``"baseline"``.
        label: the user's name of an expression (its evaluation row); None otherwise.
        params: parameter values of a user's expression.
        options: a baseline's options (focal: gamma, alpha; lee-fbeta: beta; wmw: scale, max_pairs; ...).
        recipe: training recipe options (mix, warmup, lr, batch, epochs).
        source: the entry exactly as written (``name`` shortens a user's expression to its label).
    """

    name: str
    kind: str
    metric: str | None = None
    relaxation: str | None = None
    family: str = "baseline"
    label: str | None = None
    params: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, float], ...] = ()
    recipe: tuple[tuple[str, float], ...] = ()
    source: str = ""

    @property
    def is_compiled(self) -> bool:
        return self.kind == "compiled"

    @property
    def target(self) -> str | None:
        """The evaluation row this loss optimises: its metric, a user's label, lee-fbeta's F-beta; else None."""
        if self.kind == "compiled":
            return self.label or self.metric
        if self.kind == "lee-fbeta":
            from .evaluation import fbeta_row

            return fbeta_row(dict(self.options)["beta"])
        if self.kind in RANKING_BASELINES:
            return "auroc"
        return None

    @property
    def catalog_metric(self) -> str | None:
        """The catalog metric of a compiled loss (None for a user's expression and for baselines)."""
        return self.metric if self.kind == "compiled" and self.label is None else None

    @property
    def setting_key(self) -> str:
        """The key of the paper's per-loss settings (learning rate, batch size) nearest to this loss.

        wbce, focal, lee-fbeta and the ranking baselines take BCE's (see docs/benchmark.md for why);
        a user's expression takes metricc's default rate.
        """
        if self.kind in ("wbce", "focal", "lee-fbeta") + RANKING_BASELINES:
            return "bce"
        if self.kind != "compiled":
            return self.kind
        if self.label is not None:
            return "user-metric"
        return f"sol-{self.metric}" if self.family == "sol" else self.metric

    def recipe_value(self, key: str):
        return dict(self.recipe).get(key)


# --- splitting ------------------------------------------------------------------------------------------------

_KEY_VALUE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([^=()\[\]]*?)\s*$")
_LABELLED = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)(.*)$", re.S)


def _split_outside_brackets(text: str, separator: str) -> list[str]:
    pieces, depth, current = [], 0, []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        if char == separator and depth == 0:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _option_names_of(entry: str) -> frozenset[str]:
    """The option names an entry's trailing option list takes, or none if it does not end in options."""
    text = entry.strip()
    if text.endswith("]"):
        return frozenset()
    labelled = _LABELLED.match(text)
    body = labelled.group(2) if labelled and "@" in labelled.group(2) else text
    if "@" in body:
        relaxation = body.rpartition("@")[2]
        return _relaxation_option_names() if ":" in relaxation else frozenset()
    head, colon, _ = text.partition(":")
    if colon and head.strip().lower() in BASELINE_OPTIONS:
        return frozenset(BASELINE_OPTIONS[head.strip().lower()])
    return frozenset()


def split_loss_list(text: str) -> list[str]:
    """Split ``--losses`` into entries (see the module docstring for the rule).

    ``"bce,f1@sigmoid:L=30,threshold=0.4,myf=2*TP/(2*TP+FP+FN)"`` →
    ``["bce", "f1@sigmoid:L=30,threshold=0.4", "myf=2*TP/(2*TP+FP+FN)"]``.
    """
    if ";" in text:
        return [piece.strip() for piece in text.split(";") if piece.strip()]
    entries: list[str] = []
    for piece in _split_outside_brackets(text, ","):
        if not piece.strip():
            continue
        match = _KEY_VALUE.match(piece)
        if match and entries and match.group(1) in _option_names_of(entries[-1]):
            entries[-1] = f"{entries[-1]},{piece.strip()}"
        else:
            entries.append(piece.strip())
    return entries


# --- parsing --------------------------------------------------------------------------------------------------

def catalog_names() -> list[str]:
    from metricc.catalog import catalog

    return list(catalog())


def valid_names_message() -> str:
    metrics = catalog_names()
    return (f"valid losses: {', '.join(BASELINES)}; a catalog metric ({', '.join(metrics)}); "
            f"sol-<metric> (e.g. sol-f1); <metric>@<relaxation> (e.g. f1@linear); "
            "or name=expression (e.g. myf=2*TP/(2*TP+FP+FN))")


def _number(value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise LossNameError(f"{where} needs a number, got {value!r}") from None
    if not math.isfinite(number):
        raise LossNameError(f"{where} needs a finite number, got {value!r}")
    return number


def _parse_options(text: str, allowed: Mapping[str, float] | tuple[str, ...], where: str) -> dict[str, float]:
    options: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise LossNameError(f"{where}: option {item!r} must be one of "
                                f"{', '.join(f'{k}=...' for k in allowed)}")
        if key in options:
            raise LossNameError(f"{where}: option {key!r} is given twice; give it once")
        options[key] = _number(value.strip(), f"{where}: {key}")
    return options


def _parse_recipe(text: str, name: str) -> tuple[tuple[str, float], ...]:
    recipe = _parse_options(text, RECIPE_OPTIONS, f"loss {name!r}, recipe [{text}]")
    if "mix" in recipe and not 0 <= recipe["mix"] <= 1:
        raise LossNameError(f"loss {name!r}: mix must lie in [0, 1], got {recipe['mix']:g}")
    for key in ("warmup", "epochs"):
        if key in recipe and (recipe[key] != int(recipe[key]) or recipe[key] < (0 if key == "warmup" else 1)):
            raise LossNameError(f"loss {name!r}: {key} must be a whole number of epochs, got {recipe[key]:g}")
    if "lr" in recipe and not recipe["lr"] > 0:
        raise LossNameError(f"loss {name!r}: lr must be positive, got {recipe['lr']:g}")
    if "batch" in recipe:
        batch = recipe["batch"]
        if not (0 < batch <= 1 or (batch == int(batch) and batch >= 2)):
            raise LossNameError(f"loss {name!r}: batch must be a fraction in (0, 1] or at least 2 rows, "
                                f"got {batch:g}")
    return tuple(recipe.items())


def _expression_params(text: str, params: Mapping[str, float]) -> dict[str, float]:
    """The ``--param`` values an expression (or a catalog name) uses."""
    from metricc.catalog import lookup

    stripped = text.strip()
    entry = lookup(stripped) if stripped.isidentifier() else None
    if entry is not None:
        names = set(entry.default_params)
    else:
        try:
            tree = ast.parse(stripped, mode="eval")
        except SyntaxError:
            return {}  # metricc.parse reports the syntax error with its column
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return {name: value for name, value in params.items() if name in names}


def _check_compiles(spec: LossSpec) -> None:
    """Compile once now, so a bad metric, parameter or relaxation fails before any training."""
    import metricc

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metricc.compile_metric(spec.metric, params=dict(spec.params) or None, name=spec.label,
                                   relaxation=spec.relaxation)
    except (ValueError, TypeError) as exc:  # MetricSyntaxError and MetricCheckError are ValueErrors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LossNameError(f"loss {spec.source or spec.name!r}: {first_line}") from None


def parse_loss(name: str, params: Mapping[str, float] | None = None, *, check: bool = True) -> LossSpec:
    """Parse one ``--losses`` entry; raises :class:`LossNameError` saying what is wrong and what is valid.

    ``params`` are ``--param`` values for users' expressions; ``check`` compiles compiled
    losses once to validate the metric, its parameters and the relaxation.
    """
    text = name.strip()
    if not text:
        raise LossNameError(f"empty loss name; {valid_names_message()}")
    recipe: tuple[tuple[str, float], ...] = ()
    recipe_text = ""
    if text.endswith("]"):
        opening = text.rfind("[")
        if opening <= 0:
            raise LossNameError(f"loss {text!r}: a recipe in [...] must follow a loss")
        recipe_text = text[opening:]
        recipe = _parse_recipe(text[opening + 1:-1], text)
        body = text[:opening].strip()
    else:
        body = text
    spec = _parse_body(text, body, params or {})
    name = spec.name + recipe_text
    if spec.label is not None:
        name = spec.label + (f"@{spec.relaxation}" if spec.relaxation != "anyloss" else "") + recipe_text
    spec = dataclasses.replace(spec, name=name, recipe=recipe, source=text)
    if check and spec.is_compiled:
        _check_compiles(spec)
    return spec


def _parse_body(text: str, body: str, params: Mapping[str, float]) -> LossSpec:
    labelled = _LABELLED.match(body)
    if labelled and ":" not in labelled.group(1):
        return _parse_user_metric(text, labelled.group(1), labelled.group(2).strip(), params)
    head, colon, option_text = body.partition(":")
    baseline = head.strip().lower()
    if baseline in BASELINES and "@" not in body:
        if colon and baseline not in BASELINE_OPTIONS:
            raise LossNameError(f"loss {text!r}: {baseline} takes no options")
        options = dict(BASELINE_OPTIONS.get(baseline, {}))
        options.update(_parse_options(option_text, BASELINE_OPTIONS.get(baseline, {}), f"loss {text!r}"))
        if baseline == "focal" and not (0 <= options["alpha"] <= 1 and options["gamma"] >= 0):
            raise LossNameError(f"loss {text!r}: focal needs 0 <= alpha <= 1 and gamma >= 0")
        if baseline == "lee-fbeta" and not (options["beta"] > 0 and options["per_class"] in (0.0, 1.0)):
            raise LossNameError(f"loss {text!r}: lee-fbeta needs beta > 0 and per_class 0 or 1")
        if baseline in RANKING_BASELINES:
            from .ranking import ranking_loss

            try:
                ranking_loss(baseline, options)
            except ValueError as exc:
                raise LossNameError(f"loss {text!r}: {exc}") from None
        written = baseline + (f":{option_text.strip()}" if colon else "")
        return LossSpec(written, baseline, options=tuple(options.items()))
    metric, at, relaxation = body.partition("@")
    metric = metric.strip()
    family = "anyloss"
    if metric.lower().startswith(SOL_PREFIX):
        if at:
            raise LossNameError(f"loss {text!r}: sol-<metric> already fixes the relaxation; "
                                f"write {metric[len(SOL_PREFIX):]}@sol:... instead")
        metric, relaxation, family = metric[len(SOL_PREFIX):], PAPER_SOL, "sol"
    elif at:
        relaxation, family = _relaxation_family(relaxation)
    else:
        relaxation = "anyloss"
    if metric not in catalog_names():
        raise LossNameError(f"unknown loss {text!r}; {valid_names_message()}")
    return LossSpec(body, "compiled", metric=metric, relaxation=relaxation, family=family)


def _relaxation_family(relaxation: str) -> tuple[str, str]:
    relaxation = relaxation.strip()
    family = relaxation.partition(":")[0].strip().lower() or "anyloss"
    return relaxation, "sol" if family in ("sol", "score_oriented") else family


def _parse_user_metric(text: str, label: str, expression: str, params: Mapping[str, float]) -> LossSpec:
    if keyword.iskeyword(label) or not label.isascii():
        raise LossNameError(f"loss {text!r}: the name {label!r} must be an ASCII Python identifier, not a keyword")
    from .evaluation import EVALUATORS

    if label.lower() in BASELINES or label in catalog_names() or label in EVALUATORS:
        raise LossNameError(f"loss {text!r}: the name {label!r} is taken by a baseline or catalog metric; "
                            "choose another name")
    if not expression:
        raise LossNameError(f"loss {text!r}: no expression after '{label}='")
    metric, at, relaxation = expression.partition("@")
    relaxation, family = _relaxation_family(relaxation) if at else ("anyloss", "anyloss")
    used = _expression_params(metric, params)
    return LossSpec(text, "compiled", metric=metric.strip(), relaxation=relaxation, family=family, label=label,
                    params=tuple(sorted(used.items())))


def parse_losses(text: str, params: Mapping[str, float] | None = None, *, check: bool = True) -> list[LossSpec]:
    """Parse a ``--losses`` value; duplicates, and ``--param`` values no expression uses, are errors."""
    params = dict(params or {})
    specs = [parse_loss(name, params, check=check) for name in split_loss_list(text)]
    if not specs:
        raise LossNameError(f"--losses is empty; {valid_names_message()}")
    seen: set[str] = set()
    for spec in specs:
        key = spec.label or spec.name
        if key in seen:
            raise LossNameError(f"loss {spec.name!r} is listed twice")
        seen.add(key)
    used = {name for spec in specs for name, _ in spec.params}
    unused = sorted(set(params) - used)
    if unused:
        raise LossNameError(f"--param {', '.join(unused)}: no name=expression entry in --losses uses "
                            f"{'it' if len(unused) == 1 else 'them'}")
    return specs


# --- building -------------------------------------------------------------------------------------------------

def build_loss(spec: LossSpec, y_train: torch.Tensor | None = None, *, task: str = "binary",
               estimator: str = "batch", momentum: float = 0.9,
               reset_each_epoch: bool = False) -> tuple[LossFunction, float | None]:
    """The loss function (logits, targets) → scalar, and the threshold a compiled loss was compiled for.

    ``y_train`` (the training fold's labels) sets the positive weight of ``wbce`` and
    the prevalence of ``lee-fbeta``. A recipe (mix, warmup) wraps the loss. ``estimator``
    and ``momentum`` go to ``metricc.compile_metric`` for compiled losses (baselines have
    no confusion matrix to estimate); ``reset_each_epoch`` forgets a running estimate at
    the start of every epoch. ``task`` is a placeholder for multi-class/multi-label (only
    ``binary`` exists so far). Warnings from compiling (e.g. metricc's analysis) are
    returned to the caller's warning filters unchanged.
    """
    if task != "binary":
        raise NotImplementedError(f"task={task!r}: only binary is implemented")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if reset_each_epoch and estimator != "running":
        raise ValueError("reset_each_epoch applies to the running estimator")
    loss, threshold = _base_loss(spec, y_train, estimator, momentum)
    if reset_each_epoch and spec.is_compiled:
        loss = ResetEachEpoch(loss)
    mix, warmup = spec.recipe_value("mix"), spec.recipe_value("warmup")
    if mix:
        loss = MixedWithBCE(loss, float(mix))
    if warmup:
        loss = WarmStartWithBCE(loss, int(warmup))
    return loss, threshold


def _positive_share(y_train: torch.Tensor | None, name: str) -> tuple[float, float]:
    if y_train is None:
        raise ValueError(f"{name} needs the training labels")
    positives = float(y_train.sum())
    return positives, float(y_train.numel()) - positives


def _base_loss(spec: LossSpec, y_train, estimator: str = "batch",
               momentum: float = 0.9) -> tuple[LossFunction, float | None]:
    options = dict(spec.options)
    if spec.kind == "bce":
        return F.binary_cross_entropy_with_logits, None
    if spec.kind == "mse":
        return mse_on_probabilities, None
    if spec.kind == "wbce":
        positives, negatives = _positive_share(y_train, "wbce")
        return WeightedBCE(negatives / max(positives, 1.0)), None
    if spec.kind == "focal":
        return FocalLoss(gamma=options["gamma"], alpha=options["alpha"]), None
    if spec.kind == "lee-fbeta":
        positives, negatives = _positive_share(y_train, "lee-fbeta")
        return LeeFbetaLoss(beta=options["beta"], positive_to_negative=positives / max(negatives, 1.0),
                            per_class=bool(options["per_class"])), None
    if spec.kind in RANKING_BASELINES:
        from .ranking import ranking_loss

        return ranking_loss(spec.kind, options), None
    import metricc

    loss = metricc.compile_metric(spec.metric, params=dict(spec.params) or None, name=spec.label,
                                  relaxation=spec.relaxation, estimator=estimator, momentum=momentum)
    return loss, getattr(loss.relaxation, "threshold", None)


def mse_on_probabilities(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (σ(z) − y)², the squared error of the perceptron's delta rule on the sigmoid output."""
    return torch.mean((torch.sigmoid(logits) - target.to(logits.dtype)) ** 2)


class WeightedBCE:
    """BCE on the logit with the positives weighted by ``pos_weight`` (n_negative / n_positive of the fold)."""

    def __init__(self, pos_weight: float):
        self.pos_weight = float(pos_weight)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pos_weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pos_weight)


class FocalLoss:
    """Focal loss, Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017.

    Eq. 5 of the paper: FL(p_t) = −α_t (1 − p_t)^γ log(p_t), with p_t = p for a positive and
    1 − p for a negative, α_t = α for a positive and 1 − α for a negative. γ = 2, α = 0.25 are
    the paper's choice (its Table 1b). As in the paper, where an image's loss is the sum over all
    anchors divided by the number of anchors assigned to a ground-truth box, the batch's sum is
    divided by its number of positives (at least 1). Written from the logit: −log p_t =
    softplus(−z) for a positive and softplus(z) for a negative (BCE with logits, per sample),
    and 1 − p_t = −expm1(log p_t), so nothing rounds to log(0) or 1 − 1. Soft labels
    interpolate linearly between the two cases.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25):
        self.gamma, self.alpha = float(gamma), float(alpha)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target.to(logits.dtype)
        positive = F.softplus(-logits)  # −log p
        negative = F.softplus(logits)  # −log(1 − p)
        focal_positive = self.alpha * (-torch.expm1(-positive)) ** self.gamma * positive
        focal_negative = (1 - self.alpha) * (-torch.expm1(-negative)) ** self.gamma * negative
        total = torch.sum(y * focal_positive + (1 - y) * focal_negative)
        return total / torch.clamp(y.sum().detach(), min=1.0)


class LeeFbetaLoss:
    """The surrogate Fβ loss of Lee, Yang & Yoo (2021), arXiv:2104.01459.

    Per sample, −y log p for a positive and + log(c + p) for a negative, with
    c = β² · n_pos / n_neg (the training fold's class ratio): the negatives' term spreads
    the β²·P of Fβ's denominator (1+β²)TP / (β²P + TP + FP) evenly over the negatives, so
    that −log TP + log(β²P + FP) becomes a sum of per-sample terms. Each class's terms
    are averaged over that class, so in the large-sample limit, where p is its class mean
    within each class, the gradient is exactly parallel to −∇Fβ:

        ∇loss = s · (−∇Fβ),   s = (1 + β²) / (Fβ · (1 + β² − Fβ)) > 0,

    i.e. a gradient step on this loss with rate η is a step on Fβ with rate η·s (large
    while Fβ is small): its learning-rate rule. (``tests/test_experiments_suite.py`` checks the
    identity with autograd.) Only the abstract is in this project; the form above is our
    reconstruction, and agrees with public implementations that cite the paper up to the
    per-class averaging (they average over all samples, which weights negatives by n_neg/n_pos
    relative to positives and breaks the parallel gradient on imbalanced data);
    ``per_class=False`` (``lee-fbeta:per_class=0``) is that plain mean, for comparison.
    log p = −softplus(−z) is taken from the logit; log(c + p) as logaddexp(log c, log p).
    """

    def __init__(self, beta: float = 1.0, positive_to_negative: float = 1.0, per_class: bool = True):
        self.beta = float(beta)
        self.offset = self.beta ** 2 * float(positive_to_negative)
        self.per_class = bool(per_class)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target.to(logits.dtype)
        log_p = -F.softplus(-logits)
        log_c = torch.tensor(math.log(self.offset) if self.offset > 0 else -math.inf, dtype=logits.dtype,
                             device=logits.device)
        log_c_plus_p = torch.logaddexp(log_c, log_p)
        if not self.per_class:
            return torch.mean(-y * log_p + (1 - y) * log_c_plus_p)
        positives, negatives = y.sum(), (1 - y).sum()
        positive_term = -(y * log_p).sum() / torch.clamp(positives.detach(), min=1.0)
        negative_term = ((1 - y) * log_c_plus_p).sum() / torch.clamp(negatives.detach(), min=1.0)
        return positive_term + negative_term


class MixedWithBCE:
    """(1 − λ)·loss + λ·BCE: a metric loss regularised by cross-entropy."""

    def __init__(self, loss: LossFunction, weight: float):
        self.loss, self.weight = loss, float(weight)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        if self.weight >= 1.0:
            return bce
        return (1 - self.weight) * self.loss(logits, target) + self.weight * bce

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(epoch)


class ResetEachEpoch:
    """A compiled loss whose running estimate is forgotten at the start of every epoch (``loss.reset()``)."""

    def __init__(self, loss):
        self.loss = loss

    def set_epoch(self, epoch: int) -> None:
        self.loss.reset()

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target)


class WarmStartWithBCE:
    """BCE for the first ``epochs`` epochs, then ``loss`` (the training loop calls :meth:`set_epoch`)."""

    def __init__(self, loss: LossFunction, epochs: int):
        self.loss, self.epochs, self.epoch = loss, int(epochs), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(epoch)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.epoch < self.epochs:
            return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return self.loss(logits, target)
