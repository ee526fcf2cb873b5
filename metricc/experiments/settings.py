"""The AnyLoss paper's training settings, used as defaults (every one can be overridden).

Sources (Han, Moniz, Chawla, KDD 2024, appendix B): Table 17 (SLP) and Table 18
(MLP) give a learning rate per loss for each of the four imbalanced datasets;
Tables 15 and 16 give the ones used on the 102 general datasets, which serve here
for any other dataset. Epochs: 1,000 for the SLP, 100 for the MLP. Batch size:
the SLP trains on the full training fold; the MLP on 5 % of it (50 % for the
G-mean and balanced-accuracy losses). Optimizer, from the authors' code
(doheonhan/anyloss_extension): plain gradient descent for the SLP (their NumPy
perceptron), Adam for the MLP (their Keras model).

Keys are loss setting keys (:attr:`LossSpec.setting_key`): ``mse``, ``bce`` (also
for ``wbce``, ``focal`` and ``lee-fbeta``), a catalog metric (AnyLoss relaxation), or
``sol-<metric>``. Losses the paper did not train (e.g. ``mcc``, users' expressions)
fall back to ``FALLBACK_LR``.
"""

from __future__ import annotations

import dataclasses

EPOCHS = {"slp": 1000, "mlp": 100, "resnet": 15}
OPTIMIZERS = ("sgd", "adam")
OPTIMIZER = {"slp": "sgd", "mlp": "adam", "resnet": "adam"}
FALLBACK_LR = {"slp": 1e-2, "mlp": 5e-3, "resnet": 1e-3}
LARGE_BATCH_METRICS = ("gmean", "balanced_accuracy")  # "5e-1 for L_G & L_B" (Table 18 footnote)
BATCH_FRACTION = {"mlp": 0.05}
LARGE_BATCH_FRACTION = 0.5
RESNET_BATCH_SIZE = 64

# Table 17 / 18 columns: MSE BCE L_A L_F1 L_F0.5 L_F2 L_G L_B S_A S_F1 S_B.
_COLUMNS = ("mse", "bce", "accuracy", "f1", "f05", "f2", "gmean", "balanced_accuracy",
            "sol-accuracy", "sol-f1", "sol-balanced_accuracy")
_PAPER_LR = {
    ("slp", "random"): (1e-2, 2e-1, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3),
    ("slp", "breast_cancer"): (5e-2, 5e-2, 5e-4, 1e-3, 1e-2, 7e-3, 3e-3, 5e-3, 1e-4, 1e-4, 1e-4),
    ("mlp", "random"): (1e-3, 5e-3, 4e-3, 1e-3, 5e-3, 5e-3, 5e-3, 5e-3, 1e-3, 1e-3, 2e-2),
    ("mlp", "breast_cancer"): (1e-3, 5e-3, 5e-3, 1e-2, 1e-2, 3e-3, 1e-2, 5e-3, 1e-3, 1e-2, 5e-3),
}
PAPER_LR = {key: dict(zip(_COLUMNS, rates)) for key, rates in _PAPER_LR.items()}
# Tables 15 / 16 (102 datasets): MSE, BCE, L_A, L_F1, L_G, L_B.
GENERAL_LR = {
    "slp": {"mse": 1e-2, "bce": 1e-1, "accuracy": 5e-3, "f1": 1e-2, "gmean": 5e-3, "balanced_accuracy": 5e-3},
    "mlp": {"mse": 5e-3, "bce": 3e-3, "accuracy": 5e-3, "f1": 1e-3, "gmean": 1e-2, "balanced_accuracy": 5e-3},
}


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How one loss is trained on one dataset: what the results tables report beside the scores."""

    learning_rate: float
    epochs: int
    batch_size: int
    optimizer: str
    source: str  # where the learning rate comes from, e.g. "Table 17"


def learning_rate(model: str, dataset: str, setting_key: str) -> tuple[float, str]:
    """The paper's learning rate for this loss, and where it comes from."""
    table = PAPER_LR.get((model, dataset))
    if table is not None and setting_key in table:
        return table[setting_key], "Table 17" if model == "slp" else "Table 18"
    metric = setting_key.removeprefix("sol-")
    general = GENERAL_LR.get(model, {})
    if setting_key in general:
        return general[setting_key], "Table 15" if model == "slp" else "Table 16"
    if table is not None and metric in table:  # e.g. f1@linear → the AnyLoss F1 rate
        return table[metric], "Table 17" if model == "slp" else "Table 18"
    if metric in general:
        return general[metric], "Table 15" if model == "slp" else "Table 16"
    return FALLBACK_LR[model], "default"


def batch_size(model: str, n_train: int, metric: str | None) -> int:
    """Full batch for the SLP; 5 % (50 % for G-mean / balanced accuracy) of the fold for the MLP."""
    if model == "slp":
        return n_train
    if model == "resnet":
        return min(RESNET_BATCH_SIZE, n_train)
    fraction = LARGE_BATCH_FRACTION if metric in LARGE_BATCH_METRICS else BATCH_FRACTION[model]
    return max(2, int(n_train * fraction))


def resolve(model: str, dataset: str, setting_key: str, metric: str | None, n_train: int, *,
            lr: float | None = None, epochs: int | None = None, batch: int | float | None = None,
            optimizer: str | None = None, lr_source: str | None = None) -> TrainingSettings:
    """The settings for one loss, with the user's overrides (a float ``batch`` is a fraction of the fold).

    ``lr_source`` names where an overriding ``lr`` comes from (default ``--lr``).
    """
    rate, source = (lr, lr_source or "--lr") if lr is not None else learning_rate(model, dataset, setting_key)
    if batch is None:
        size = batch_size(model, n_train, metric)
    elif isinstance(batch, float):
        size = max(2, int(n_train * batch))
    else:
        size = min(batch, n_train)
    return TrainingSettings(rate, epochs if epochs is not None else EPOCHS[model], size,
                            optimizer or OPTIMIZER[model], source)
