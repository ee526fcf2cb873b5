"""Relaxations: the runtime's torch code and the symbolic form that derivations print, each against the
papers' formulas (tests/oracle.py, which shares no code with metricc.relax or metricc.runtime); the
complement 1 − ŷ computed as its own value; the amplifier range of AnyLoss's Table 1."""

import math

import numpy as np
import pytest
import sympy
import torch

import metricc
from metricc.relax import (
    Identity,
    Linear,
    ScoreOriented,
    Sigmoid,
    resolve_relaxation,
    saturation_limit,
    valid_amplifier_range,
)

from . import oracle


def soft_prediction(relaxation, p, threshold):
    """ŷ(p) from the papers' formula (the oracle), for a relaxation this module built."""
    return oracle.soft_pair(oracle.Relaxation.of(relaxation), p, 1 - p, threshold)[0]


def mp_soft_pair(relaxation, p, threshold):
    """(ŷ, 1 − ŷ) at p (an mpf, or p = 1 − q given as ``1 - mpf(q)``) in 50 digits, with their slopes."""
    import mpmath

    with mpmath.workdps(oracle.DIGITS):
        x = oracle.Dual(p, (1,))
        return oracle.mp_soft_pair(oracle.Relaxation.of(relaxation), x, 1 - x, threshold)

RELAXATIONS = [
    Sigmoid(), Sigmoid(L=30.0, threshold=0.4), Linear(), Linear(threshold=0.2, delta=0.1), Linear(threshold=0.8),
    Identity(), ScoreOriented(), ScoreOriented("cosine"), ScoreOriented("uniform", mu=0.3, delta=0.2),
    ScoreOriented("cosine", mu=0.6, delta=0.25),
]


def torch_functions(relaxation):
    """ŷ(p) and dŷ/dp from the runtime's object, on copies (it works in place in buffers it owns)."""
    runtime = relaxation.runtime()

    def fresh(function):
        def run(p, threshold):
            shape = torch.broadcast_shapes(p.shape, torch.as_tensor(threshold).shape)
            return function(p.expand(*shape).clone(), threshold)
        return run

    return fresh(runtime.soft_), fresh(runtime.slope_)


def _threshold(relaxation):
    return relaxation.threshold if relaxation.threshold is not None else 0.5


@pytest.mark.parametrize("relaxation", RELAXATIONS, ids=repr)
def test_runtime_matches_the_papers_formula_and_its_autograd_slope(relaxation):
    """Against tests/oracle.py, written from the papers and sharing no code with the runtime."""
    forward, derivative = torch_functions(relaxation)
    # Random points: knots (where one-sided slopes differ) are hit with probability zero.
    points = torch.rand(97, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.998 + 0.001
    threshold = _threshold(relaxation)
    x = points.clone().requires_grad_(True)
    expected = soft_prediction(relaxation, x, threshold)
    (expected_slope,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(forward(points, threshold), expected.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(derivative(points, threshold), expected_slope, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("relaxation", RELAXATIONS, ids=repr)
def test_the_symbolic_form_that_derivations_print_is_the_papers_formula(relaxation):
    """relaxation.symbolic() and its derivative (what `metricc derive` prints) against the oracle in 50 digits."""
    p = sympy.Symbol("p", real=True)
    value = sympy.lambdify(p, relaxation.symbolic(p), "mpmath")
    slope = sympy.lambdify(p, relaxation.symbolic_derivative(p), "mpmath")
    points = torch.rand(31, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.998 + 0.001
    for x in points.tolist():
        predicted, _ = mp_soft_pair(relaxation, x, _threshold(relaxation))
        assert float(value(x)) == pytest.approx(float(predicted.value), rel=1e-12, abs=1e-14)
        assert float(slope(x)) == pytest.approx(float(predicted.grad[0]), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("relaxation", RELAXATIONS, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_complement_is_one_minus_the_soft_prediction_without_cancellation(relaxation, dtype):
    """soft_pair_ gives 1 − ŷ as its own value: within a few ulps of the exact 1 − ŷ (from float64 or
    high-precision arithmetic on the same p), even where ŷ rounds to 1 and 1 − ŷ would be 0."""
    import mpmath

    logits = torch.cat([torch.linspace(-12, 12, 97, dtype=torch.float64), torch.tensor([30.0, -30.0])])
    p, q = torch.sigmoid(logits).to(dtype), torch.sigmoid(-logits).to(dtype)  # q = 1 − p, exactly rounded
    threshold = _threshold(relaxation)
    predicted, complement = relaxation.runtime().soft_pair_(p.clone(), q.clone(), threshold)
    eps = torch.finfo(dtype).eps
    # The score-oriented CDF reaches 0 at a knot μ + δ, itself a rounded number: within an ulp of it the
    # complement is off by up to the slope times that ulp, as any floating-point form would be.
    knot = 2 * eps / relaxation.delta if isinstance(relaxation, ScoreOriented) else 0.0
    for k in range(logits.numel()):
        with mpmath.workdps(oracle.DIGITS):  # the complement from q itself where p rounds towards 1
            pk = mpmath.mpf(float(p[k])) if float(p[k]) < 0.5 else 1 - mpmath.mpf(float(q[k]))
            x = oracle.Dual(pk, (1,))
            exact = oracle.mp_soft_pair(oracle.Relaxation.of(relaxation), x, 1 - x, threshold)[1].value
        got = float(complement[k])
        assert abs(got - float(exact)) <= 64 * eps * float(exact) + knot + torch.finfo(dtype).tiny
    assert ((predicted + complement - 1).abs() <= 4 * torch.finfo(dtype).eps).all()


@pytest.mark.parametrize("relaxation", RELAXATIONS, ids=repr)
def test_slope_symmetry_about_one_half_is_claimed_exactly_where_it_holds(relaxation):
    """The eager backward evaluates dŷ/dp at min(p, 1 − p) when the runtime relaxation says it may; whether
    the slope is symmetric comes from the oracle's formula."""

    def slope(x):
        return float(mp_soft_pair(relaxation, x, _threshold(relaxation))[0].grad[0])

    offsets = np.random.default_rng(0).uniform(0.001, 0.499, 64)
    symmetric = all(math.isclose(slope(0.5 + d), slope(0.5 - d), rel_tol=1e-12, abs_tol=1e-15) for d in offsets)
    assert relaxation.runtime().slope_symmetric_about_half == symmetric


@pytest.mark.parametrize("relaxation", [r for r in RELAXATIONS if r.runtime().slope_symmetric_about_half], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slope_at_the_tail_equals_the_slope_at_p(relaxation, dtype):
    """mul_slope_at_tail_(grad, q), q = σ(−|z|), times tail_slope_scale, is grad·dŷ/dp at p = σ(z): in float64
    against the oracle's slope at p itself, and in every dtype against the generic slope at q. In place."""
    runtime = relaxation.runtime()
    logits = torch.cat([torch.linspace(-30, 30, 301, dtype=torch.float64), torch.tensor([0.0, 1e-6, -1e-6])])
    threshold = _threshold(relaxation)
    tail = torch.sigmoid(-logits.abs()).to(dtype)
    grad = torch.linspace(-2, 3, logits.numel(), dtype=dtype)
    into = grad.clone()
    got = runtime.mul_slope_at_tail_(into, tail.clone(), threshold)
    assert got is into
    got = got * runtime.tail_slope_scale
    _, slope = torch_functions(relaxation)
    # A sigmoid's slope moves by up to |a|·ε relative when a = L·(q − t), |a| ≤ L/2, is rounded
    # differently (one fused rounding here, two in the generic slope).
    conditioning = getattr(relaxation, "L", 0.0) / 2
    torch.testing.assert_close(got, grad * slope(tail, threshold), rtol=(4 + conditioning) * torch.finfo(dtype).eps,
                               atol=0.0)
    if dtype == torch.float64:
        x = torch.sigmoid(logits).requires_grad_(True)
        (expected,) = torch.autograd.grad(soft_prediction(relaxation, x, threshold).sum(), x)
        torch.testing.assert_close(got, grad * expected, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("relaxation", RELAXATIONS, ids=repr)
def test_soft_predictions_are_monotone_maps_of_the_unit_interval(relaxation):
    forward, derivative = torch_functions(relaxation)
    points = torch.linspace(0, 1, 2001, dtype=torch.float64)
    threshold = relaxation.threshold if relaxation.threshold is not None else 0.5
    values = forward(points, threshold)
    assert (values >= 0).all() and (values <= 1).all()
    assert (values.diff() >= -1e-15).all()
    assert (derivative(points, threshold) >= 0).all()


@pytest.mark.parametrize("relaxation", [r for r in RELAXATIONS if not isinstance(r, Identity)], ids=repr)
def test_thresholds_broadcast_as_one_column_each(relaxation):
    forward, derivative = torch_functions(relaxation)
    p = torch.rand(50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    thresholds = torch.tensor([[0.3], [0.5], [0.7]], dtype=torch.float64)
    block = forward(p, thresholds)
    assert block.shape == (3, 50)
    for row, t in enumerate(thresholds[:, 0].tolist()):
        assert torch.allclose(block[row], forward(p, t))
        assert torch.allclose(derivative(p, thresholds)[row], derivative(p, t))


def test_linear_heaviside_passes_through_its_five_points():
    forward, _ = torch_functions(Linear(threshold=0.3, delta=0.2))
    t, tm = 0.3, 0.3
    points = torch.tensor([0.0, t - tm / 2, t, t + tm / 2, 1.0], dtype=torch.float64)
    assert torch.allclose(forward(points, t), torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64))


def test_sigmoid_is_the_anyloss_amplifier():
    forward, _ = torch_functions(Sigmoid())
    p = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(forward(p, 0.5), 1 / (1 + torch.exp(-73 * (p - 0.5))))
    assert repr(Sigmoid().runtime()) == "SigmoidAmplifier(scale=73.0, threshold=0.5)"


def test_sigmoid_derivative_never_rounds_to_zero_where_the_value_saturates():
    _, derivative = torch_functions(Sigmoid())
    p = torch.tensor([0.999], dtype=torch.float32)
    forward, _ = torch_functions(Sigmoid())
    assert forward(p, 0.5).item() == 1.0  # saturated in float32
    assert derivative(p, 0.5).item() > 0


@pytest.mark.parametrize("spec, expected", [
    ("anyloss", Sigmoid(73.0, 0.5)), ("linear", Linear(0.5, 0.2)), ("identity", Identity()),
    ("sol", ScoreOriented()), ("sigmoid:L=30,threshold=0.4", Sigmoid(30.0, 0.4)),
    ("sol:distribution=cosine,mu=0.4", ScoreOriented("cosine", 0.4, 0.5)), ("softset:delta=0.1", Linear(0.5, 0.1)),
])
def test_relaxation_specs(spec, expected):
    assert resolve_relaxation(spec) == expected
    assert resolve_relaxation(expected.spec()) == expected


@pytest.mark.parametrize("bad, message", [
    ("cubic", "unknown relaxation"), ("sigmoid:L", "key=value"), ("sigmoid:L=abc", "needs a number"),
    ("sigmoid:k=3", "does not take"),
])
def test_bad_relaxation_specs(bad, message):
    with pytest.raises(ValueError, match=message):
        resolve_relaxation(bad)


@pytest.mark.parametrize("factory, message", [
    (lambda: Sigmoid(L=-1), "positive"), (lambda: Sigmoid(threshold=1.0), r"\(0, 1\)"),
    (lambda: Linear(delta=0.5), r"\(0, 0.5\)"), (lambda: ScoreOriented("normal"), "uniform"),
    (lambda: ScoreOriented(delta=0), "positive"), (lambda: Sigmoid(L=float("nan")), "finite"),
])
def test_invalid_relaxation_parameters(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("precision, low, high", [
    (0.1, 5.49, 91.84), (0.01, 9.38, 74.97), (1e-3, 13.84, 73.62), (1e-15, 69.08, 73.47),
])
def test_valid_amplifier_range_reproduces_anyloss_table_1_in_float64(precision, low, high):
    got_low, got_high = valid_amplifier_range(precision, torch.float64)
    assert got_low == pytest.approx(low, abs=0.006)
    assert got_high == pytest.approx(high, abs=0.006)


def test_no_valid_amplifier_below_1e_16_in_float64():
    low, high = valid_amplifier_range(1e-16, torch.float64)
    assert low > high  # the paper: "no valid range with an accuracy level of 1e-16"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_amplifier_bounds_are_where_torch_really_saturates(dtype):
    t = 1e-3
    _, high = valid_amplifier_range(t, dtype)
    x = torch.tensor([1 - t], dtype=dtype)
    inside = torch.sigmoid(torch.tensor(high * 0.98, dtype=dtype) * (x - 0.5))
    outside = torch.sigmoid(torch.tensor(high * 1.05, dtype=dtype) * (x - 0.5))
    assert inside.item() < 1.0 and outside.item() == 1.0
    low, _ = valid_amplifier_range(t, dtype)
    amplified = 1 / (1 + math.exp(-low * 1.01 * (t - 0.5)))
    assert amplified <= t  # condition 1 holds just above L_min ...
    assert 1 / (1 + math.exp(-low * 0.99 * (t - 0.5))) > t  # ... and fails just below


def test_float32_upper_bound_is_far_lower_and_l73_saturates_there():
    _, high32 = valid_amplifier_range(1e-3, torch.float32)
    assert 30 < high32 < 40
    assert saturation_limit(Sigmoid(), torch.float32) is not None
    assert saturation_limit(Sigmoid(), torch.float64) is None
    assert saturation_limit(Sigmoid(L=30.0), torch.float32) is None


def test_saturation_warns_only_where_the_slope_underflows_once_per_dtype():
    """ŷ rounding to 1 in float32 (L = 73) costs nothing beyond rounding: no warning. A slope that underflows
    to 0 (L = 200: σ(−100) < float32's smallest normal) would stop learning: one warning per dtype."""
    import warnings

    generator = torch.Generator().manual_seed(0)
    z, y = torch.randn(20, generator=generator), (torch.rand(20, generator=generator) < 0.5).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metricc.compile_metric("f1")(z, y)
        metricc.compile_metric("f1")(z.half(), y)
    steep = metricc.compile_metric("f1", relaxation=Sigmoid(L=200.0))
    with pytest.warns(metricc.SaturationWarning, match=r"L=200 is too steep for torch.float32.*valid L"):
        steep(z, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steep(z, y)  # second call: no warning
        steep(z.double(), y)  # float64: σ(−100) is a normal number


def test_an_empty_amplifier_range_says_no_valid_l():
    from metricc.relax import describe_amplifier_range

    t = 1e-3
    low = math.log((1 - t) / t) / (0.5 - t)  # AnyLoss eq. 2; eq. 3 with a 24-bit (float32) or 8-bit significand
    assert describe_amplifier_range(t, torch.float32) == \
        f"valid L in torch.float32 for p in [0.001, 0.999]: {low:.2f}..{24 * math.log(2) / (0.5 - t):.2f}"
    assert describe_amplifier_range(t, torch.bfloat16) == (
        f"no valid L in torch.bfloat16 for p in [0.001, 0.999]: the amplifier needs L ≥ {low:.2f}, but "
        f"L ≤ {8 * math.log(2) / (0.5 - t):.2f} keeps ŷ below 1")


def test_valid_amplifier_range_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"\(0, 0.5\)"):
        valid_amplifier_range(0.7)
    with pytest.raises(ValueError, match="floating dtype"):
        valid_amplifier_range(0.1, torch.int32)


def test_relaxation_descriptions_are_single_lines():
    for relaxation in RELAXATIONS:
        for text in (relaxation.formula(), relaxation.derivative_formula(), relaxation.latex_formula()):
            assert text and "\n" not in text
        assert resolve_relaxation(relaxation.spec()).runtime().__class__ is relaxation.runtime().__class__


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("distribution", ["uniform", "cosine"])
def test_score_oriented_density_is_full_just_inside_the_interval(distribution, dtype):
    """ŷ = P(τ < p), τ on [0, 1]: the density at p = 1e-20 (or 1e-9 in float32) is the density's value there,
    1 for the uniform and sin²(πp)/δ for the raised cosine, not half of it."""
    relaxation = ScoreOriented(distribution, 0.5, 0.5)
    p = torch.tensor([1e-20 if dtype == torch.float64 else 1e-9, 0.25], dtype=dtype)
    got = relaxation.runtime().slope_(p.clone(), 0.5)
    expected = [float(mp_soft_pair(relaxation, x, 0.5)[0].grad[0]) for x in p.tolist()]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=dtype), rtol=1e-5, atol=0)


# -- exact parameters, messages and boundaries (assertions mutation testing showed missing) ----------------

def test_parameters_are_stored_as_floats_and_specs_read_back_exactly():
    cases = [(Sigmoid(L=30, threshold=0.25), ("L", "threshold"), "sigmoid:L=30.0,threshold=0.25"),
             (Linear(threshold=0.25, delta=0.125), ("threshold", "delta"), "linear:threshold=0.25,delta=0.125"),
             (ScoreOriented("cosine", mu=0.25, delta=1), ("mu", "delta"),
              "sol:distribution=cosine,mu=0.25,delta=1.0"),
             (Identity(), (), "identity")]
    for relaxation, fields, spec in cases:
        for field in fields:
            assert type(getattr(relaxation, field)) is float, (relaxation, field)
        assert relaxation.spec() == spec
        assert resolve_relaxation(spec) == relaxation
    # float subclasses (numpy's float64) become plain floats too, and print as such in generated code
    for relaxation, fields in ((Sigmoid(L=np.float64(30), threshold=np.float64(0.25)), ("L", "threshold")),
                               (Linear(threshold=np.float64(0.25), delta=np.float64(0.125)), ("threshold", "delta")),
                               (ScoreOriented(mu=np.float64(0.25), delta=np.float64(0.5)), ("mu", "delta"))):
        for field in fields:
            assert type(getattr(relaxation, field)) is float, (relaxation, field)
    assert Sigmoid(L=0.5).L == 0.5  # any positive scale is valid, also below 1


@pytest.mark.parametrize("factory, message", [
    (lambda: Sigmoid(L=True), "Sigmoid: L must be a finite number, got True"),
    (lambda: Sigmoid(L="30"), "Sigmoid: L must be a finite number, got '30'"),
    (lambda: Sigmoid(L=0.0), "Sigmoid: L must be positive, got 0.0"),
    (lambda: Sigmoid(threshold=float("inf")), "Sigmoid: threshold must be a finite number, got inf"),
    (lambda: Sigmoid(threshold=0.0), "Sigmoid: threshold must lie in (0, 1), got 0.0"),
    (lambda: Sigmoid(threshold=1.0), "Sigmoid: threshold must lie in (0, 1), got 1.0"),
    (lambda: Linear(threshold=None), "Linear: threshold must be a finite number, got None"),
    (lambda: Linear(threshold=0.0), "Linear: threshold must lie in (0, 1), got 0.0"),
    (lambda: Linear(threshold=1.0), "Linear: threshold must lie in (0, 1), got 1.0"),
    (lambda: Linear(delta=float("nan")), "Linear: delta must be a finite number, got nan"),
    (lambda: Linear(delta=0.0), "Linear: delta must lie in (0, 0.5), got 0.0"),
    (lambda: Linear(delta=0.5), "Linear: delta must lie in (0, 0.5), got 0.5"),
    (lambda: ScoreOriented(mu=False), "ScoreOriented: mu must be a finite number, got False"),
    (lambda: ScoreOriented(mu=0.0), "ScoreOriented: mu must lie in (0, 1), got 0.0"),
    (lambda: ScoreOriented(mu=1.0), "ScoreOriented: mu must lie in (0, 1), got 1.0"),
    (lambda: ScoreOriented(delta=-0.0), "ScoreOriented: delta must be positive, got -0.0"),
    (lambda: ScoreOriented(delta=float("inf")), "ScoreOriented: delta must be a finite number, got inf"),
    (lambda: ScoreOriented("normal"), "ScoreOriented: distribution must be 'uniform' or 'cosine', got 'normal'"),
])
def test_invalid_parameters_get_the_exact_message(factory, message):
    with pytest.raises(ValueError) as info:
        factory()
    assert str(info.value) == message


@pytest.mark.parametrize("spec, error, message", [
    (3, TypeError, "relaxation must be a Relaxation or a name, not int"),
    ("cubic", ValueError, "unknown relaxation 'cubic'; choose one of anyloss, sigmoid, linear, softset, identity, "
                          "probabilistic, sol, score_oriented or pass an instance such as metricc.Sigmoid(L=30.0)"),
    ("sigmoid:L=3=4", ValueError, "relaxation option L='3=4' needs a number"),
])
def test_relaxation_spec_errors_say_exactly_what_is_wrong(spec, error, message):
    with pytest.raises(error) as info:
        resolve_relaxation(spec)
    assert str(info.value) == message


@pytest.mark.parametrize("relaxation", [r for r in RELAXATIONS if r.threshold is not None], ids=repr)
def test_the_symbolic_form_at_another_threshold_is_the_papers_formula_there(relaxation):
    """symbolic(p, t) and symbolic_derivative(p, t) use the t given (threshold averaging), not the default."""
    p = sympy.Symbol("p", real=True)
    t = 0.35
    value = sympy.lambdify(p, relaxation.symbolic(p, sympy.Float(t)), "mpmath")
    slope = sympy.lambdify(p, relaxation.symbolic_derivative(p, sympy.Float(t)), "mpmath")
    symbol = sympy.Symbol("t", real=True)  # a symbolic threshold: the derivative is still along p only
    slope_in_t = sympy.lambdify((p, symbol), relaxation.symbolic_derivative(p, symbol), "mpmath")
    for x in (0.1, 0.3, 0.42, 0.77):
        predicted, _ = mp_soft_pair(relaxation, x, t)
        assert float(value(x)) == pytest.approx(float(predicted.value), rel=1e-12, abs=1e-14)
        assert float(slope(x)) == pytest.approx(float(predicted.grad[0]), rel=1e-9, abs=1e-12)
        assert float(slope_in_t(x, t)) == pytest.approx(float(predicted.grad[0]), rel=1e-9, abs=1e-12)


def test_valid_amplifier_range_defaults_to_float64_and_refuses_its_ends():
    assert valid_amplifier_range(0.1) == valid_amplifier_range(0.1, torch.float64)
    from metricc.relax import describe_amplifier_range

    assert describe_amplifier_range(0.1) == describe_amplifier_range(0.1, torch.float64)
    assert describe_amplifier_range(0.1).startswith("valid L in torch.float64 for p in [0.1, 0.9]: 5.49..91.84")
    for bad in (0.0, 0.5, True, "0.1"):
        with pytest.raises(ValueError, match=r"precision must lie in \(0, 0.5\)"):
            valid_amplifier_range(bad)


def test_saturation_limit_is_where_the_amplifier_reaches_the_significand():
    """|p − t| ≤ p_bits·ln 2 / L keeps ŷ inside (0, 1); None where that covers all of [0, 1]."""
    assert saturation_limit(Sigmoid(), torch.float32) == pytest.approx(24 * math.log(2) / 73, rel=1e-15)
    assert saturation_limit(Sigmoid(L=100.0), torch.float64) == pytest.approx(53 * math.log(2) / 100, rel=1e-15)
    exactly_reaching = Sigmoid(L=48 * math.log(2))  # reach 24·ln 2 / L = 1/2 exactly: the whole interval
    assert saturation_limit(exactly_reaching, torch.float32) is None
    assert saturation_limit(Sigmoid(L=48 * math.log(2) * 1.01), torch.float32) < 0.5
    assert saturation_limit(Linear(), torch.float32) is None


@pytest.mark.parametrize("relaxation, parameters", [
    (Sigmoid(), ("L = 73", "t = 0.5")), (Linear(threshold=0.3, delta=0.1), ("t = 0.3", "δ = 0.1")),
    (Identity(), ()), (ScoreOriented("cosine", 0.4, 0.2), ("μ = 0.4", "δ = 0.2", "cosine")),
])
def test_descriptions_state_the_formula_and_its_parameters(relaxation, parameters):
    assert relaxation.formula().startswith("ŷ = ")
    assert relaxation.derivative_formula().startswith("dŷ/dp = ")
    assert relaxation.latex_formula().startswith(r"\hat y = ")
    for parameter in parameters:
        assert parameter in relaxation.formula()


def test_derivative_descriptions_are_the_papers():
    assert Sigmoid().derivative_formula() == "dŷ/dp = L·σ(a)·σ(−a), a = L·(p − t)"
    assert Identity().formula() == "ŷ = p (probabilistic confusion matrix)"
    assert Identity().derivative_formula() == "dŷ/dp = 1"
    assert ScoreOriented("uniform").derivative_formula() == "dŷ/dp = 1/(2δ) for |p − μ| < δ, else 0"
    assert ScoreOriented("cosine").derivative_formula() == "dŷ/dp = (1 + cos(π(p − μ)/δ))/(2δ) for |p − μ| < δ, else 0"
    assert Linear().derivative_formula().endswith("t + t_m/2; t_m = min(t, 1 − t)")


def test_with_threshold_keeps_every_other_parameter():
    assert Sigmoid(30.0, 0.4).with_threshold(0.7) == Sigmoid(30.0, 0.7)
    assert Linear(0.4, 0.1).with_threshold(0.7) == Linear(0.7, 0.1)
    assert ScoreOriented("cosine", 0.4, 0.2).with_threshold(0.7) == ScoreOriented("cosine", 0.7, 0.2)
    with pytest.raises(ValueError) as info:
        Identity().with_threshold(0.5)
    assert str(info.value) == ("Identity has no threshold, so thresholds= cannot average over it; "
                               "use Sigmoid, Linear or ScoreOriented")
