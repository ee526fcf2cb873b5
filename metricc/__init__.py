"""metricc: compile any confusion-matrix metric into a differentiable PyTorch loss.

    >>> import metricc
    >>> loss_fn = metricc.compile_metric("2*TP/(2*TP+FP+FN)")   # an nn.Module
    >>> report = metricc.analyze("gmean")                         # range, direction, Lipschitz bound, ...
"""

from . import functional
from .analyze import Report, analyze
from .derive import Derivation, derive
from .errors import (
    BatchSizeWarning,
    CompileFallbackWarning,
    DomainWarning,
    MetricCheckError,
    MetricSyntaxError,
    MetricWarning,
    NonLipschitzWarning,
    RangeWarning,
    SaturationWarning,
)
from .load import CompiledLoss, compile_metric
from .metric import Metric
from .parse import parse
from .relax import Identity, Linear, Relaxation, ScoreOriented, Sigmoid, describe_amplifier_range, valid_amplifier_range

__version__ = "0.2.0.dev0"  # the one source: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = [
    "BatchSizeWarning", "CompileFallbackWarning", "CompiledLoss", "Derivation", "DomainWarning", "Identity", "Linear",
    "Metric", "MetricCheckError", "MetricSyntaxError", "MetricWarning", "NonLipschitzWarning", "RangeWarning",
    "Relaxation", "Report", "SaturationWarning", "ScoreOriented", "Sigmoid", "analyze", "compile_metric", "derive",
    "describe_amplifier_range", "functional", "parse", "valid_amplifier_range",
]
