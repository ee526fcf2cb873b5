"""metricc: compile any confusion-matrix metric into a differentiable PyTorch loss."""
from .derive import Derivation, derive
from .errors import MetricCheckError, MetricSyntaxError
from .load import CompiledLoss, compile_metric
from .metric import Metric
from .parse import parse
from .relax import Identity, Linear, ScoreOriented, Sigmoid, valid_amplifier_range

__all__ = ["CompiledLoss", "Derivation", "Identity", "Linear", "Metric", "MetricCheckError", "MetricSyntaxError",
           "ScoreOriented", "Sigmoid", "compile_metric", "derive", "parse", "valid_amplifier_range"]
