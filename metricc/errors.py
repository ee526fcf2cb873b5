"""The errors and warnings metricc raises.

Errors subclass ``ValueError`` so that callers who already catch bad-argument
errors keep working; warnings subclass ``UserWarning`` so that they can be
filtered with the standard ``warnings`` machinery.
"""

from __future__ import annotations

from .runtime import CompileFallbackWarning, MetricWarning  # defined there, as the runtime imports only torch

_CONTEXT = 40  # characters shown on each side of an error in a long expression


class MetricSyntaxError(ValueError):
    """A metric expression that the grammar does not accept.

    The message names the problem and, where it has a position, shows the
    offending column of the expression with a caret under it.
    """

    def __init__(self, message: str, text: str | None = None, column: int | None = None,
                 length: int = 1, line: int = 1):
        self.problem = message
        self.text = text
        self.column = column  # 0-based column on ``line``
        self.line = line
        if text is not None and column is not None:
            lines = text.splitlines() or [""]
            shown = lines[min(line, len(lines)) - 1]
            where = f" (line {line}, column {column + 1})" if len(lines) > 1 else f" (column {column + 1})"
            start = max(0, column - _CONTEXT) if len(shown) > 2 * _CONTEXT else 0
            end = min(len(shown), start + 2 * _CONTEXT) if len(shown) > 2 * _CONTEXT else len(shown)
            prefix = "..." if start > 0 else ""
            suffix = "..." if end < len(shown) else ""
            caret_length = max(1, min(length, end - column))
            caret = " " * (len(prefix) + column - start) + "^" * caret_length
            shown = prefix + shown[start:end] + suffix
            message = f"{message}{where}\n    {shown}\n    {caret}"
        super().__init__(message)


class MetricCheckError(ValueError):
    """A metric that parses but cannot serve as a loss (unbounded, not monotone, ...)."""

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)


class NonLipschitzWarning(MetricWarning):
    """The metric's gradient is unbounded somewhere a batch can reach."""


class SaturationWarning(MetricWarning):
    """The amplifier scale rounds soft predictions to exactly 0 or 1 in this dtype."""


__all__ = ["CompileFallbackWarning", "MetricCheckError", "MetricSyntaxError", "MetricWarning",
           "NonLipschitzWarning", "SaturationWarning"]
