"""The limits that make every call answer in bounded time and memory, whatever the input.

Two kinds, because neither suffices alone:

- a CPU-time budget per public call (``call_budget``): ``compile_metric``, ``analyze``, ``derive``
  and the commands that run them end within ``CALL_SECONDS`` of CPU time, compiled or refused,
  on any thread (``metricc.budget`` interrupts pure-Python work such as sympy's);
- structural limits on the expression (``check_expression``), enforced wherever a ``Metric`` is
  built: they bound what no budget can interrupt, single calls into C that allocate or compute
  in proportion to an expression's degree (expanding ``(TP/P)**262144``) or to the size of a
  number (``exp`` of a number with millions of digits, which mpmath evaluates in one slow
  multiplication), and so they also bound memory, which no budget measures.

docs/security.md says what each limit guarantees and how that was measured.
"""

from __future__ import annotations

import contextlib
import math

import sympy

from .budget import Budget, BudgetExceeded
from .errors import MetricCheckError, MetricSyntaxError

CALL_SECONDS = 4.9  # CPU seconds for one public call, parsing and loading included: under 5 s in all

# The degree of an expression as sympy brings it over one denominator: numerator plus denominator.
# (TP/P)**64, which the grammar allows as written, has degree 128; the catalog's largest is 4.
MAX_DEGREE = 128
# Terms of the expansion over one common denominator, counted as if no two terms combined: what sympy's
# polynomial routines (cancel, factor, together) hold in memory along the way. (n + 1)**16 has 4,845.
MAX_TERMS = 10_000
MAX_NODES = 2000  # nodes of the sympy tree: about the grammar's 2,000 characters
# exp(exp(TP)) at TP = 10**6, where the analysis looks for divergence, is a number of 1.4 million binary
# digits: mpmath spends 27 s in one multiplication that no budget interrupts.
MAX_EXP_NESTING = 1
_CEILING = 10**30  # where counts stop growing (they only need to tell "beyond the limit")


def degree(expr: sympy.Expr) -> tuple[int, int]:
    """(numerator, denominator) degrees that bound ``expr`` over one common denominator, in the
    confusion entries, counting each function value as one more generator (exp(u) has the degree of u, plus 1).

    An upper bound read off the tree without expanding anything: a sum's common denominator is the
    product of its terms' denominators, a power multiplies both degrees by the exponent (rounded up).
    """
    memo: dict[sympy.Basic, tuple[int, int]] = {}

    def visit(node) -> tuple[int, int]:
        found = memo.get(node)
        if found is not None:
            return found
        if node.is_Symbol:
            result = (1, 0) if node.name in ("TP", "FN", "FP", "TN") else (0, 0)
        elif node.is_number or not node.args:
            result = (0, 0)
        elif node.is_Mul:
            parts = [visit(arg) for arg in node.args]
            result = (sum(p[0] for p in parts), sum(p[1] for p in parts))
        elif node.is_Pow and node.exp.is_number:
            numerator, denominator = visit(node.base)
            exponent = abs(node.exp)
            factor = int(sympy.ceiling(exponent)) if exponent.is_finite else MAX_DEGREE + 1
            result = (factor * numerator, factor * denominator)
            if node.exp.is_negative:
                result = result[::-1]
        else:  # sums, and functions of their arguments (which one more generator counts)
            parts = [visit(arg) for arg in node.args]
            denominator = sum(p[1] for p in parts)
            numerator = max(p[0] + denominator - p[1] for p in parts)
            result = (numerator if node.is_Add else numerator + denominator + 1, denominator if node.is_Add else 0)
        memo[node] = result
        return result

    return visit(expr)


def expanded_terms(expr: sympy.Expr) -> int:
    """The most terms that the numerator or the denominator of any part of ``expr`` can have, expanded over one
    common denominator, if no two terms combined: (a + b + c)**k has up to C(k + 2, k) terms."""
    memo: dict[sympy.Basic, tuple[int, int]] = {}
    largest = 1

    def visit(node) -> tuple[int, int]:
        nonlocal largest
        found = memo.get(node)
        if found is not None:
            return found
        parts = [visit(arg) for arg in node.args]
        if node.is_Mul:
            result = (math.prod(p[0] for p in parts), math.prod(p[1] for p in parts))
        elif node.is_Add:
            denominator = math.prod(p[1] for p in parts)
            result = (sum(p[0] * (denominator // p[1]) for p in parts), denominator)
        elif node.is_Pow and node.exp.is_Integer:
            k = abs(int(node.exp))
            numerator, denominator = (_multisets(t, k) for t in parts[0])
            result = (denominator, numerator) if node.exp.is_negative else (numerator, denominator)
        else:  # a symbol, a number, or a function value (a root too): one new term of its own
            result = (1, 1)
        result = (min(result[0], _CEILING), min(result[1], _CEILING))
        largest = max(largest, *result)
        memo[node] = result
        return result

    visit(expr)
    return largest


def _multisets(terms: int, k: int) -> int:
    """Products of k terms out of ``terms``, order ignored: C(terms + k − 1, k), the terms of a sum to the k."""
    if terms <= 1 or k == 0:
        return 1
    if terms > _CEILING or k > _CEILING:
        return _CEILING
    return min(math.comb(terms + k - 1, min(k, terms - 1)), _CEILING)


def _exp_nesting(expr: sympy.Basic) -> int:
    """The most ``exp`` calls of something that is not a constant on one path from the root to a leaf."""
    memo: dict[sympy.Basic, int] = {}

    def visit(node) -> int:
        if node not in memo:
            inner = max((visit(arg) for arg in node.args), default=0)
            memo[node] = inner + (1 if isinstance(node, sympy.exp) and node.free_symbols else 0)
        return memo[node]

    return visit(expr)


def check_expression(expr: sympy.Basic, what: str = "the expression") -> None:
    """Refuse an expression beyond the structural limits, with the limit and what to write instead."""
    # The tree's size, not the number of distinct subtrees: printing and most of sympy walk the tree, and a
    # shared subtree (e = e*(e + 1), repeated) doubles it at every level. The count stops at the limit.
    for count, _ in enumerate(sympy.preorder_traversal(expr), start=1):
        if count > MAX_NODES:
            raise MetricSyntaxError(f"{what} has more than {MAX_NODES:,} nodes; at most {MAX_NODES:,} are accepted")
    total = sum(degree(expr))
    if total > MAX_DEGREE:
        raise MetricSyntaxError(
            f"{what} has degree {total:,} (numerator plus denominator over one denominator; nested powers "
            f"multiply their exponents); at most {MAX_DEGREE} is accepted: write a lower power")
    terms = expanded_terms(expr)
    if terms > MAX_TERMS:
        shown = f"{terms:,}" if terms < _CEILING else "astronomically many"
        raise MetricSyntaxError(
            f"{what} expands to up to {shown} terms over one denominator (powers of sums multiply them out); "
            f"at most {MAX_TERMS:,} are accepted: write lower powers, or powers of single entries or rates")
    if _exp_nesting(expr) > MAX_EXP_NESTING:
        raise MetricSyntaxError(
            "exp() of an exp() of the confusion entries is not accepted: exp(exp(TP)) overflows float64 once "
            "TP > 6.6 and has more than a million digits at TP = 10**6; use exp() once")


@contextlib.contextmanager
def call_budget(what: str, seconds: float | None = None):
    """Run a public call within ``seconds`` of CPU time (default ``CALL_SECONDS``, read at each call); when they
    run out (or memory does), refuse with a ``MetricCheckError`` that says what did not finish. Inside an
    enclosing call budget, that one's deadline holds and its refusal names its own call."""
    seconds = CALL_SECONDS if seconds is None else seconds
    budget = Budget(seconds)
    try:
        with budget:
            yield
    except BudgetExceeded as exceeded:
        if exceeded.budget is not budget:
            raise
        raise MetricCheckError(f"{what} did not finish within {seconds:g} s of CPU time: the expression is too "
                               "complex to analyse or derive; write a simpler one") from None
    except MemoryError:
        raise MetricCheckError(f"{what} ran out of memory: the expression is too complex to analyse or derive; "
                               "write a simpler one") from None
