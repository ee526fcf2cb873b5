"""Lovász-softmax and Lovász-hinge against references that share no code with them.

The reference evaluates the Jaccard set loss with Python sets and exact fractions, and its Lovász
extension as the integral of the set loss over the level sets of the errors,
Δ̄(m) = ∫₀^∞ Δ({i : m_i ≥ t}) dt (Lovász 1983; Bach 2013, prop. 3.1), which is the sorted formula
the module uses only in disguise. The paper's stated properties are checked on top: equal to the
Jaccard loss on hard (0/1) errors, so to 1 − scikit-learn's IoU of hard predictions; convex; positively
homogeneous.
"""

from fractions import Fraction

import numpy as np
import pytest
import torch

from metricc.experiments.lovasz import lovasz_extension, lovasz_hinge, lovasz_softmax

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def jaccard_set_loss(mispredicted: set, labels: list[int]) -> Fraction:
    """Δ_J(M) = |M| / |G ∪ M| (Berman et al., eq. 3), G = the pixels whose label is 1."""
    ground = {i for i, label in enumerate(labels) if label}
    union = ground | mispredicted
    return Fraction(len(mispredicted), len(union)) if union else Fraction(0)


def level_set_extension(errors: list[float], labels: list[int]) -> Fraction:
    """∫₀^∞ Δ_J({i : m_i ≥ t}) dt, exactly: the level set is constant between consecutive distinct values."""
    values = sorted({Fraction(e) for e in errors if e > 0}, reverse=True) + [Fraction(0)]
    total = Fraction(0)
    for upper, lower in zip(values, values[1:]):
        level = {i for i, e in enumerate(errors) if Fraction(e) >= upper}
        total += (upper - lower) * jaccard_set_loss(level, labels)
    return total


def _random_case(generator: np.random.Generator, size: int, ties: bool):
    errors = generator.integers(0, 4, size) / 4.0 if ties else generator.uniform(0, 2, size)
    labels = generator.integers(0, 2, size)
    return errors, labels


@pytest.mark.parametrize("ties", [False, True])
def test_extension_equals_the_level_set_integral_of_the_set_loss(ties):
    generator = np.random.default_rng(3)
    for size in (1, 2, 3, 5, 8):
        for _ in range(20):
            errors, labels = _random_case(generator, size, ties)
            got = lovasz_extension(torch.tensor(errors, dtype=torch.float64), torch.tensor(labels)).item()
            expected = level_set_extension(errors.tolist(), labels.tolist())
            assert got == pytest.approx(float(expected), abs=1e-12), (errors, labels)


def test_extension_equals_the_jaccard_loss_on_hard_errors_and_is_positively_homogeneous():
    generator = np.random.default_rng(4)
    for _ in range(50):
        size = int(generator.integers(1, 9))
        labels = generator.integers(0, 2, size)
        wrong = generator.integers(0, 2, size)
        expected = jaccard_set_loss({i for i in range(size) if wrong[i]}, labels.tolist())
        errors = torch.tensor(wrong, dtype=torch.float64)
        assert lovasz_extension(errors, torch.tensor(labels)).item() == pytest.approx(float(expected), abs=1e-15)
        assert lovasz_extension(2.5 * errors, torch.tensor(labels)).item() == pytest.approx(2.5 * float(expected))


def test_extension_is_convex():
    generator = np.random.default_rng(5)
    for _ in range(200):
        size = int(generator.integers(2, 8))
        labels = torch.tensor(generator.integers(0, 2, size))
        a, b = (torch.tensor(generator.uniform(0, 2, size)) for _ in range(2))
        t = float(generator.uniform())
        mixed = lovasz_extension(t * a + (1 - t) * b, labels)
        assert mixed <= t * lovasz_extension(a, labels) + (1 - t) * lovasz_extension(b, labels) + 1e-12


def test_hinge_on_hard_logits_is_twice_one_minus_scikit_learns_iou():
    """Logits ±1 make every hinge error 0 (right) or 2 (wrong): Δ̄ = 2·Δ_J = 2·(1 − IoU)."""
    generator = np.random.default_rng(6)
    for per_image in (True, False):
        target = torch.tensor(generator.integers(0, 2, (3, 4, 5)))
        target[:, 0, 0] = 1  # a foreground pixel in every image
        predicted = torch.tensor(generator.integers(0, 2, (3, 4, 5)))
        logits = (2.0 * predicted - 1).to(torch.float64)
        ious = [sklearn_metrics.jaccard_score(t.flatten().numpy(), p.flatten().numpy())
                for t, p in zip(target, predicted)]
        if not per_image:
            ious = [sklearn_metrics.jaccard_score(target.flatten().numpy(), predicted.flatten().numpy())]
        expected = 2 * (1 - np.mean(ious))
        assert lovasz_hinge(logits, target, per_image=per_image).item() == pytest.approx(expected, abs=1e-12)
        assert lovasz_hinge(logits[:, None], target, per_image=per_image).item() == pytest.approx(expected, abs=1e-12)


def test_softmax_on_one_hot_probabilities_is_one_minus_scikit_learns_iou_over_present_classes():
    generator = np.random.default_rng(7)
    target = torch.tensor(generator.integers(0, 3, (2, 5, 4)))
    target[target == 2] = 1  # class 2 absent from the ground truth
    predicted = torch.tensor(generator.integers(0, 3, (2, 5, 4)))
    logits = 200.0 * torch.nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).to(torch.float64)
    y, p = target.flatten().numpy(), predicted.flatten().numpy()
    per_class = sklearn_metrics.jaccard_score(y, p, labels=[0, 1, 2], average=None, zero_division=0.0)
    assert lovasz_softmax(logits, target).item() == pytest.approx(1 - per_class[:2].mean(), abs=1e-12)
    # classes="all": the absent class adds Δ_J = 1 wherever it is predicted at all, as a set loss does
    assert lovasz_softmax(logits, target, classes="all").item() == pytest.approx(
        (2 - per_class[:2].sum() + (1.0 if (p == 2).any() else 0.0)) / 3, abs=1e-12)
    images = [1 - sklearn_metrics.jaccard_score(t.flatten().numpy(), q.flatten().numpy(), labels=sorted(
        set(t.flatten().tolist())), average="macro") for t, q in zip(target, predicted)]
    assert lovasz_softmax(logits, target, per_image=True).item() == pytest.approx(np.mean(images), abs=1e-12)


def test_hinge_gradient_is_the_slope_of_the_reference():
    generator = np.random.default_rng(8)
    logits = torch.tensor(generator.normal(0, 1, (1, 3, 3)), requires_grad=True)
    target = torch.tensor(generator.integers(0, 2, (1, 3, 3)))
    lovasz_hinge(logits, target).backward()

    def reference(z):
        signs = 2 * target.flatten().numpy() - 1
        errors = np.maximum(1 - z.flatten() * signs, 0)
        return float(level_set_extension(errors.tolist(), target.flatten().tolist()))

    z0, step = logits.detach().numpy(), 1e-7
    for index in np.ndindex(z0.shape):
        up, down = z0.copy(), z0.copy()
        up[index] += step
        down[index] -= step
        slope = (reference(up) - reference(down)) / (2 * step)
        assert logits.grad[index].item() == pytest.approx(slope, abs=1e-6)


def test_mismatched_shapes_and_unknown_class_choice_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        lovasz_hinge(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="do not match"):
        lovasz_softmax(torch.zeros(2, 2, 3, 3), torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="classes must be one of"):
        lovasz_softmax(torch.zeros(2, 2, 3, 3), torch.zeros(2, 3, 3, dtype=torch.long), classes="some")
