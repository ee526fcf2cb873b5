"""An independent reference for group metrics and Lagrangians: autograd through the written formula.

Nothing here imports metricc. A test states its objective and constraints as text; this module walks the text's
syntax tree with torch operations on per-group soft entries (boolean masks of the group indices, direct sums),
reduces over the groups where the argument is finite (torch.amax, torch.amin, mean, sum), forms
loss(f) + Σ λ·slack and lets autograd differentiate it. The relaxations come from tests/oracle.py.
"""

from __future__ import annotations

import ast

import torch

from .oracle import Relaxation, catalog_entries, probabilities, soft_pair, tied

_SUMS = {"P": ("TP", "FN"), "N": ("FP", "TN"), "PP": ("TP", "FP"), "PN": ("FN", "TN"), "n": ("TP", "FN", "FP", "TN")}
_REDUCTIONS = ("max_g", "min_g", "mean_g", "sum_g")


class GroupExpression:
    """An expression over the batch's entries (TP …), group g's (TP[g] …, recall[g]) and reductions over g.

    ``evaluate(batch, groups, g)`` takes the batch's four entries (0-dim tensors), the groups' (four tensors of
    shape (G,)) and the group a free g stands for (None inside no reduction)."""

    def __init__(self, text: str, params: dict | None = None):
        entry = catalog_entries().get(text.strip())
        self.params = dict(params or {})
        if entry is not None:
            text, self.params = entry["expression"], {**entry["params"], **self.params}
        self.text = text
        self.tree = ast.parse(text.strip(), mode="eval").body

    def evaluate(self, batch, groups, g=None):
        return self._walk(self.tree, batch, groups, g)

    def _entries(self, name, batch, groups, g):
        source = batch if g is None else tuple(entry[g] for entry in groups)
        values = dict(zip(("TP", "FN", "FP", "TN"), source))
        if name in values:
            return values[name]
        if name in _SUMS:
            return sum(values[part] for part in _SUMS[name])
        raise KeyError(name)

    def _walk(self, node, batch, groups, g):
        like = batch[0]
        if isinstance(node, ast.Constant):
            return torch.tensor(float(node.value), dtype=like.dtype)
        if isinstance(node, ast.Name):
            if node.id in self.params:
                return torch.tensor(float(self.params[node.id]), dtype=like.dtype)
            return self._entries(node.id, batch, groups, None)
        if isinstance(node, ast.Subscript):
            name = node.value.id
            if name in ("TP", "FN", "FP", "TN") or name in _SUMS:
                return self._entries(name, batch, groups, g)
            catalog = GroupExpression(name)  # recall[g]: the catalog metric at group g's entries
            group_entries = tuple(entry[g] for entry in groups)
            return catalog._walk(catalog.tree, group_entries, groups, None)
        if isinstance(node, ast.UnaryOp):
            value = self._walk(node.operand, batch, groups, g)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = self._walk(node.left, batch, groups, g), self._walk(node.right, batch, groups, g)
            return {ast.Add: torch.add, ast.Sub: torch.sub, ast.Mult: torch.mul, ast.Div: torch.div,
                    ast.Pow: torch.pow}[type(node.op)](left, right)
        assert isinstance(node, ast.Call), ast.dump(node)
        name = node.func.id
        if name in _REDUCTIONS:
            values = [self._walk(node.args[0], batch, groups, k) for k in range(len(groups[0]))]
            defined = [v for v in values if torch.isfinite(v.detach())]  # an undefined group never enters the graph
            if not defined:
                return like * float("nan")
            reduce = {"max_g": torch.amax, "min_g": torch.amin, "mean_g": torch.mean, "sum_g": torch.sum}[name]
            return reduce(torch.stack(defined))
        arguments = [self._walk(a, batch, groups, g) for a in node.args]
        if name in ("sqrt", "log", "exp", "abs"):
            return getattr(torch, name)(arguments[0])
        result = arguments[0]
        for argument in arguments[1:]:
            result = (torch.minimum if name == "min" else torch.maximum)(result, argument)
        return result

    def free_g(self) -> bool:
        """Whether the text reads group entries outside every reduction."""
        def walk(node, inside):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _REDUCTIONS:
                return any(walk(a, True) for a in node.args)
            if isinstance(node, ast.Subscript):
                return not inside
            return any(walk(child, inside) for child in ast.iter_child_nodes(node))
        return walk(self.tree, False)


def soft_group_entries(relaxation: Relaxation, logits, target, groups, count, weight=None, threshold=None):
    """The batch's entries and the groups' (each (G,)), direct sums over boolean masks, differentiable."""
    p, q = probabilities(logits)
    t = relaxation.default_thresholds()[0] if threshold is None else threshold
    predicted, complement = soft_pair(relaxation, p, q, t)
    complement = tied(predicted, complement)
    y = target.to(logits.dtype)
    w = torch.ones_like(logits) if weight is None else weight.to(logits.dtype)
    products = (w * y * predicted, w * y * complement, w * (1 - y) * predicted, w * (1 - y) * complement)
    per_group = tuple(torch.stack([(term * (groups == k)).sum() for k in range(count)]) for term in products)
    batch = tuple(term.sum() for term in products)
    return batch, per_group


def lagrangian(objective: str, direction: str, constraints, multipliers, relaxation, logits, target, groups, count,
               weight=None, zero_division=0.0):
    """loss(f) + Σ λ·slack over the constraint rows (a free g: one row per group); rows with an undefined value
    contribute nothing. ``constraints``: (text, sense, level) triples."""
    batch, per_group = soft_group_entries(relaxation, logits, target, groups, count, weight)
    f = GroupExpression(objective).evaluate(batch, per_group)
    if not torch.isfinite(f.detach()):
        f = torch.tensor(zero_division, dtype=logits.dtype)
    loss = 1 - f if direction == "maximize" else f
    row = 0
    for text, sense, level in constraints:
        expression = GroupExpression(text)
        for g in (range(count) if expression.free_g() else [None]):
            value = expression.evaluate(batch, per_group, g)
            slack = value - level if sense == "<=" else level - value
            if torch.isfinite(value.detach()):
                loss = loss + multipliers[row] * slack
            row += 1
    return loss


def lagrangian_value_and_grad(*args, **kwargs):
    """(L, ∂L/∂logits) in float64 for the arguments of :func:`lagrangian` (logits is the sixth)."""
    args = list(args)
    z = args[5].detach().to(torch.float64).requires_grad_(True)
    args[5] = z
    loss = lagrangian(*args, **kwargs)
    if not loss.requires_grad:
        return loss.detach(), torch.zeros_like(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad
