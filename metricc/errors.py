"""The errors and warnings metricc raises.

Errors subclass ``ValueError`` so that callers who already catch bad-argument
errors keep working; warnings subclass ``UserWarning`` (through :class:`MetricWarning`)
so that they can be filtered with the standard ``warnings`` machinery.

A message that tells the user what to pass instead names the option as an
:class:`Option`, not as text: ``str(error)`` spells it as Python keyword arguments
(``check=False``, ``params={'beta': 2}``), and the command line renders the very same
error with its own flags (``--no-check``, ``--param beta=2``) through :meth:`render`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# The base class lives in the runtime, which imports only torch and warns too (CompileFallbackWarning).
from .runtime import CompileFallbackWarning, MetricWarning

_CONTEXT = 40  # characters shown on each side of an error in a long expression


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()  # an Option named without a value: "params=" / "--param"


@dataclasses.dataclass(frozen=True, eq=False)
class Option:
    """An option of the API that a message suggests, spelt by whoever shows the message.

    Attributes:
        name: the keyword argument of ``compile_metric``/``analyze``/``parse`` (``"check"``,
            ``"params"``, ``"direction"``, ...).
        value: the value to pass; ``...`` where the user chooses it (in ``params``, per
            name: ``{"beta": ...}``); :data:`NO_VALUE` to name the option alone.
    """

    name: str
    value: Any = NO_VALUE

    def python(self) -> str:
        """The option as a Python keyword argument: ``check=False``, ``params={'beta': ...}``."""
        if self.value is NO_VALUE:
            return f"{self.name}="
        if isinstance(self.value, Mapping):
            items = ", ".join(f"{key!r}: {'...' if value is ... else repr(value)}" for key, value in self.value.items())
            return f"{self.name}={{{items}}}"
        return f"{self.name}={'...' if self.value is ... else repr(self.value)}"

    def __str__(self) -> str:
        return self.python()


Part = str | Option
Spelling = Callable[[Option], str]


def render(parts: Sequence[Part], spell: Spelling = Option.python) -> str:
    """Join a message's parts, spelling each :class:`Option` with ``spell``."""
    return "".join(part if isinstance(part, str) else spell(part) for part in parts)


def _parts(message: str | Sequence[Part]) -> tuple[Part, ...]:
    return (message,) if isinstance(message, str) else tuple(message)


class MetricSyntaxError(ValueError):
    """A metric expression that the grammar does not accept.

    The message names the problem and, where it has a position, shows the
    offending column of the expression with a caret under it.

    Attributes:
        problem: the problem without the position, as the API spells it.
        parts: the same, with the options it suggests as :class:`Option`\\s.
        text, column, line: where the problem is (``column`` is 0-based), or None.
    """

    def __init__(self, message: str | Sequence[Part], text: str | None = None, column: int | None = None,
                 length: int = 1, line: int = 1):
        self.parts = _parts(message)
        self.problem = render(self.parts)
        self.text = text
        self.column = column
        self.line = line
        self.length = length
        super().__init__(self.render())

    def render(self, spell: Spelling = Option.python) -> str:
        """The message, with suggested options spelt by ``spell`` (Python keywords by default)."""
        message = render(self.parts, spell)
        text, column, line = self.text, self.column, self.line
        if text is None or column is None:
            return message
        lines = text.splitlines() or [""]
        shown = lines[min(line, len(lines)) - 1]
        where = f" (line {line}, column {column + 1})" if len(lines) > 1 else f" (column {column + 1})"
        start = max(0, column - _CONTEXT) if len(shown) > 2 * _CONTEXT else 0
        end = min(len(shown), start + 2 * _CONTEXT) if len(shown) > 2 * _CONTEXT else len(shown)
        prefix = "..." if start > 0 else ""
        suffix = "..." if end < len(shown) else ""
        caret_length = max(1, min(self.length, end - column))
        caret = " " * (len(prefix) + column - start) + "^" * caret_length
        shown = prefix + shown[start:end] + suffix
        return f"{message}{where}\n    {shown}\n    {caret}"


class MetricCheckError(ValueError):
    """A metric that parses but cannot serve as a loss (unbounded, not monotone, ...).

    Attributes:
        report: the :class:`metricc.Report` that shows why, where there is one.
        parts: the message, with the options it suggests as :class:`Option`\\s.
    """

    def __init__(self, message: str | Sequence[Part], report: object = None):  # report: a metricc.Report
        self.report = report
        self.parts = _parts(message)
        super().__init__(self.render())

    def render(self, spell: Spelling = Option.python) -> str:
        """The message, with suggested options spelt by ``spell`` (Python keywords by default)."""
        return render(self.parts, spell)


class AnalysisWarning(MetricWarning):
    """A finding of the analysis. Like the errors, it carries its message as parts with :class:`Option`
    objects (``str()`` spells them as keyword arguments; :meth:`render` as its caller wants)."""

    def __init__(self, message: str | Sequence[Part] = "", *args):
        self.parts = _parts(message)
        super().__init__(render(self.parts), *args)

    def render(self, spell: Spelling = Option.python) -> str:
        return render(self.parts, spell)


class NonLipschitzWarning(AnalysisWarning):
    """The metric's gradient is unbounded somewhere a batch can reach (or no bound could be proved)."""


class RangeWarning(AnalysisWarning):
    """A finding about the metric's range: an end that is unbounded or could not be proved."""


class BatchSizeWarning(AnalysisWarning):
    """The metric depends on the batch size (counts), not only on rates: value and gradient change with it."""


class DomainWarning(AnalysisWarning):
    """The metric is undefined somewhere its simplified expression does not show (it keeps the written domain),
    or has a pole or an invalid argument inside the domain."""


class SaturationWarning(MetricWarning):
    """The amplifier is so steep that its slope dŷ/dp underflows to 0 for some p in this dtype."""


__all__ = ["AnalysisWarning", "BatchSizeWarning", "CompileFallbackWarning", "DomainWarning", "MetricCheckError",
           "MetricSyntaxError", "MetricWarning", "NonLipschitzWarning", "Option", "RangeWarning", "SaturationWarning"]
