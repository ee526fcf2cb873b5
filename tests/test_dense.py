"""Dense prediction: inputs in F.cross_entropy's layout (N, C, d1, ..., dK), entries summed per batch or per
image, ignore_index and per-pixel weights, against the libraries segmentation users run today.

Oracles share no code with metricc: MONAI's DiceLoss, TverskyLoss and GeneralizedDiceLoss (value and autograd
gradient, float32, to 1e-6) with the identity relaxation and MONAI's smoothing written into the metric; in the
hard limit torchmetrics' and scikit-learn's per-pixel Dice and IoU; autograd through the plain direct sums for
the shape properties.
"""

import warnings

import pytest
import torch

import metricc

monai_losses = pytest.importorskip("monai.losses")

SMOOTH = 1e-5  # MONAI's smooth_nr = smooth_dr
DICE = "(2*TP + s)/(2*TP + FP + FN + s)"
TVERSKY = "(TP + s)/(TP + alpha*FP + beta*FN + s)"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        warnings.simplefilter("ignore", UserWarning)  # MONAI's single-channel notes
        yield


def batch(shape=(3, 4, 9, 11), seed=0, kind="random"):
    """Logits (N, C, H, W) and class indices (N, H, W), float32; degenerate kinds: a class absent from image 0,
    image 1 of one class only, image 2 all ignored (255)."""
    generator = torch.Generator().manual_seed(seed)
    n, classes = shape[:2]
    logits = torch.randn(shape, generator=generator) * 2
    labels = torch.randint(0, classes, (n, *shape[2:]), generator=generator)
    if kind == "degenerate":
        labels[0][labels[0] == 2] = 1  # class 2 absent from image 0
        labels[1] = 0  # image 1: one class only
        labels[2] = 255  # image 2: ignored everywhere
    return logits, labels


def compare(ours, theirs, logits, target_ours, target_theirs, weight=None, tolerance=1e-6):
    """Value and gradient of our loss and MONAI's on the same float32 logits."""
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss_ours = ours(a, target_ours) if weight is None else ours(a, target_ours, weight)
    loss_theirs = theirs(b, target_theirs)
    torch.testing.assert_close(loss_ours, loss_theirs, rtol=tolerance, atol=tolerance)
    loss_ours.sum().backward()
    loss_theirs.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=tolerance)


def dice_loss(task, classes, reduce, **options):
    return metricc.compile_metric(DICE, params={"s": SMOOTH}, name="dice_smooth", direction="maximize",
                                  relaxation="identity", task=task, num_classes=classes, reduce=reduce, **options)


@pytest.mark.parametrize("reduce", ["batch", "image"])
@pytest.mark.parametrize("kind", ["random", "degenerate"])
def test_softmax_dice_is_monai_dice_loss(reduce, kind):
    logits, labels = batch(kind=kind)
    ours = dice_loss("multiclass", 4, reduce, ignore_index=255)
    theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=reduce == "batch", ignore_index=255)
    compare(ours, theirs, logits, labels, labels.unsqueeze(1))


@pytest.mark.parametrize("reduce", ["batch", "image"])
@pytest.mark.parametrize("kind", ["random", "degenerate"])
def test_sigmoid_dice_and_tversky_are_monai_on_multilabel_targets(reduce, kind):
    logits, labels = batch(kind="random", seed=3)
    target = (torch.rand(logits.shape, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    if kind == "degenerate":
        target[0, 2] = 0  # label 2 absent from image 0
        target[1] = 1  # image 1: every label everywhere
    ours = dice_loss("multilabel", 4, reduce)
    theirs = monai_losses.DiceLoss(sigmoid=True, batch=reduce == "batch")
    compare(ours, theirs, logits, target, target)
    tversky = metricc.compile_metric(TVERSKY, params={"s": SMOOTH, "alpha": 0.3, "beta": 0.7}, name="tversky_smooth",
                                     direction="maximize", relaxation="identity", task="multilabel", num_labels=4,
                                     reduce=reduce)
    compare(tversky, monai_losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, batch=reduce == "batch"), logits,
            target, target)


@pytest.mark.parametrize("reduce", ["batch", "image"])
def test_softmax_tversky_is_monai_tversky_loss(reduce):
    logits, labels = batch(kind="degenerate", seed=5)
    ours = metricc.compile_metric(TVERSKY, params={"s": SMOOTH, "alpha": 0.3, "beta": 0.7}, name="tversky_smooth",
                                  direction="maximize", relaxation="identity", task="multiclass", num_classes=4,
                                  reduce=reduce, ignore_index=255)
    theirs = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, batch=reduce == "batch",
                                      ignore_index=255)
    compare(ours, theirs, logits, labels, labels.unsqueeze(1))


@pytest.mark.parametrize("reduce", ["batch", "image"])
@pytest.mark.parametrize("form", ["softmax", "sigmoid"])
def test_inverse_square_class_weights_are_monai_generalized_dice_loss(reduce, form):
    """class_weights='inverse_square': each class's entries times 1/support² of its segment, summed over classes;
    an absent class takes the largest weight of the present ones (MONAI's choice)."""
    logits, labels = batch(seed=6)
    labels[0][labels[0] == 3] = 0  # class 3 absent from image 0: an infinite weight replaced
    if form == "softmax":
        task, ours_target, theirs_target = "multiclass", labels, labels.unsqueeze(1)
        theirs = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=reduce == "batch")
    else:
        task = "multilabel"
        ours_target = theirs_target = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
        theirs = monai_losses.GeneralizedDiceLoss(sigmoid=True, batch=reduce == "batch")
    ours = dice_loss(task, 4, reduce, class_weights="inverse_square")
    compare(ours, theirs, logits, ours_target, theirs_target, tolerance=2e-6)


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("reduce", ["batch", "image"])
def test_reductions_are_monai_reductions(reduction, reduce):
    """reduction='sum' sums the (image, class) losses, 'none' returns them: (C,) or (N, C)."""
    logits, labels = batch(seed=7)
    ours = dice_loss("multiclass", 4, reduce, reduction=reduction)
    theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=reduce == "batch", reduction=reduction)
    a = logits.clone().requires_grad_(True)
    value = ours(a, labels)
    expected = theirs(logits, labels.unsqueeze(1))
    assert value.shape == ((4,) if reduce == "batch" else (3, 4)) if reduction == "none" else value.dim() == 0
    torch.testing.assert_close(value, expected.reshape(value.shape), rtol=1e-6, atol=1e-6)
    if reduction == "none":  # each entry's gradient: backward of a weighted sum of the entries
        b = logits.clone().requires_grad_(True)
        probe = torch.rand(value.shape, generator=torch.Generator().manual_seed(8))
        (value * probe).sum().backward()
        (theirs(b, labels.unsqueeze(1)).reshape(value.shape) * probe).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def one_hot_predictions(labels, classes, flip=0.3, seed=9):
    """Hard predictions right 1 − flip of the time, as one-hot probabilities (N, C, ...)."""
    generator = torch.Generator().manual_seed(seed)
    guesses = torch.randint(0, classes, labels.shape, generator=generator)
    predicted = torch.where(torch.rand(labels.shape, generator=generator) < flip, guesses, labels)
    return predicted, torch.nn.functional.one_hot(predicted, classes).movedim(-1, 1).double()


@pytest.mark.parametrize("name", ["dice", "jaccard"])
def test_hard_limit_is_scikit_learn_per_pixel_score_over_the_batch(name):
    from sklearn.metrics import f1_score, jaccard_score

    _, labels = batch(shape=(4, 5, 12, 10), seed=10)
    predicted, probabilities = one_hot_predictions(labels, 5)
    loss_fn = metricc.compile_metric(name, task="multiclass", num_classes=5, relaxation="identity", from_logits=False)
    score = {"dice": f1_score, "jaccard": jaccard_score}[name]
    expected = score(labels.reshape(-1).numpy(), predicted.reshape(-1).numpy(), average="macro",
                     labels=list(range(5)), zero_division=0)
    assert 1 - loss_fn(probabilities, labels).item() == pytest.approx(expected, abs=1e-12)


def test_hard_limit_per_image_is_torchmetrics_samplewise_dice_and_iou():
    segmentation = pytest.importorskip("torchmetrics.functional.segmentation")
    _, labels = batch(shape=(4, 3, 12, 10), seed=11)
    predicted, probabilities = one_hot_predictions(labels, 3, seed=12)
    dice = metricc.compile_metric("dice", task="multiclass", num_classes=3, relaxation="identity", from_logits=False,
                                  reduce="image")
    expected = segmentation.dice_score(predicted, labels, num_classes=3, input_format="index",
                                       aggregation_level="samplewise").mean()
    assert 1 - dice(probabilities, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    iou = metricc.compile_metric("jaccard", task="multiclass", num_classes=3, relaxation="identity",
                                 from_logits=False, reduce="image")
    expected = segmentation.mean_iou(predicted, labels, num_classes=3, input_format="index").mean()
    assert 1 - iou(probabilities, labels).item() == pytest.approx(expected.item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Shapes: K = 0 … 3 spatial axes, C ∈ {1, 2, 5}, against autograd through the plain direct sums.


def plain_loss(task, logits, target, weight, per_image, formula):
    """1 − mean over (image,) class of f(TP, FN, FP, TN), the entries written as direct sums in torch."""
    if task == "binary":
        p = torch.sigmoid(logits)
        y = target.to(p.dtype)
        p, y = p.unsqueeze(1), y.unsqueeze(1)
    else:
        p = torch.softmax(logits, 1)
        y = torch.nn.functional.one_hot(target, logits.shape[1]).movedim(-1, 1).to(p.dtype)
    w = torch.ones_like(p[:, :1]) if weight is None else weight.to(p.dtype).reshape(p.shape[0], 1, *p.shape[2:])
    dims = tuple(range(2, p.dim())) if per_image else (0, *range(2, p.dim()))
    tp, fn = (w * y * p).sum(dims), (w * y * (1 - p)).sum(dims)
    fp, tn = (w * (1 - y) * p).sum(dims), (w * (1 - y) * (1 - p)).sum(dims)
    return (1 - formula(tp, fn, fp, tn)).mean()


SHAPES = [(spatial, classes) for spatial in [(), (7,), (5, 6), (3, 4, 5)] for classes in (1, 2, 5)]


@pytest.mark.parametrize("spatial, classes", SHAPES, ids=lambda v: str(v))
def test_any_spatial_rank_and_class_count_matches_autograd_of_the_direct_sums(spatial, classes):
    generator = torch.Generator().manual_seed(len(spatial) * 10 + classes)
    n = 3
    task = "binary" if classes == 1 else "multiclass"
    shape = (n, classes, *spatial) if classes > 1 else (n, *spatial)
    logits = torch.randn(shape, generator=generator, dtype=torch.float64) * 2
    target = (torch.randint(0, max(classes, 2), (n, *spatial), generator=generator))
    weight = torch.rand((n, *spatial), generator=generator, dtype=torch.float64) + 0.1 if spatial else None
    per_images = (False, True) if spatial else (False,)
    for per_image in per_images:
        loss_fn = metricc.compile_metric("jaccard", task=task, num_classes=None if classes == 1 else classes,
                                         relaxation="identity", reduce="image" if per_image else "batch")
        z, z_plain = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        loss = loss_fn(z, target, weight)
        loss.backward()
        expected = plain_loss(task, z_plain, target, weight, per_image, lambda tp, fn, fp, tn: tp / (tp + fn + fp))
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(z.grad, z_plain.grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_channels_last_and_cropped_inputs_give_the_contiguous_loss_and_a_gradient_in_their_layout(task):
    classes = 1 if task == "binary" else 4
    generator = torch.Generator().manual_seed(13)
    full = torch.randn(2, classes, 12, 14, generator=generator, dtype=torch.float64)
    if task == "multiclass":
        target = torch.randint(0, classes, (2, 12, 14), generator=generator)
    else:
        target = (torch.rand(2, classes, 12, 14, generator=generator) < 0.4).double()
    loss_fn = metricc.compile_metric("mcc", task=task, num_classes=None if classes == 1 else classes, check=False,
                                     relaxation="identity" if task == "multiclass" else "anyloss")
    reference = full.clone().requires_grad_(True)
    expected = loss_fn(reference, target)
    expected.backward()
    layouts = {"channels_last": full.to(memory_format=torch.channels_last),
               "crop": torch.randn(2, classes, 20, 20, dtype=torch.float64)[:, :, 3:15, 2:16]}
    layouts["crop"].copy_(full)
    for name, tensor in layouts.items():
        z = tensor.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        loss = loss_fn(z, target)
        loss.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0, msg=name)
        torch.testing.assert_close(z.grad, reference.grad, rtol=1e-10, atol=1e-15, msg=name)
        if name == "channels_last" and classes > 1:
            assert z.grad.is_contiguous(memory_format=torch.channels_last)


def test_per_pixel_weights_are_per_pixel_masks_and_ignore_index_is_weight_zero():
    logits, labels = batch(seed=14, kind="degenerate")
    loss_fn = metricc.compile_metric("dice", task="multiclass", num_classes=4, relaxation="identity",
                                     ignore_index=255, reduce="image")
    masked = metricc.compile_metric("dice", task="multiclass", num_classes=4, relaxation="identity", reduce="image")
    kept = (labels != 255).float()
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss_fn(a, labels).backward()
    masked(b, labels.masked_fill(labels == 255, 0), kept).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert (a.grad[2] == 0).all()  # image 2 is ignored everywhere: no gradient


@pytest.mark.parametrize("call, message", [
    (lambda: dice_loss("multiclass", 4, "batch")(torch.zeros(2, 4, 5, 5), torch.zeros(2, 5, 6, dtype=torch.long)),
     r"target must have input's shape \(2, 4, 5, 5\) .*or \(2, 5, 5\) class indices.*got \(2, 5, 6\); nothing is"),
    (lambda: dice_loss("multiclass", 4, "batch")(torch.zeros(2, 3, 5, 5), torch.zeros(2, 5, 5, dtype=torch.long)),
     r"input must have shape \(N, 4\) or \(N, 4, d1, ...\) .*got \(2, 3, 5, 5\)"),
    (lambda: dice_loss("multiclass", 4, "batch", ignore_index=255)(torch.zeros(2, 4, 5), torch.zeros(2, 4, 5)),
     "ignore_index=255 applies to class-index targets"),
    (lambda: dice_loss("multiclass", 4, "image")(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)),
     r"reduce='image' .* no spatial axes"),
    (lambda: dice_loss("multiclass", 4, "batch")(torch.zeros(2, 4, 5), torch.zeros(2, 5), torch.ones(2, 4, 5)),
     "must hold class indices"),
    (lambda: dice_loss("multiclass", 4, "batch")(torch.zeros(2, 4, 5), torch.zeros(2, 5, dtype=torch.long),
                                                 torch.ones(2, 4, 5)), r"weight must have shape \(2,\), one per "
                                                                       r"sample or per element \(2, 5\)"),
    (lambda: dice_loss("multiclass", 4, "batch", ignore_index=2), "ignore_index=2 is a class"),
    (lambda: dice_loss("multiclass", 4, "image", estimator="running"), "estimator='running'"),
    (lambda: dice_loss("multiclass", 4, "batch", class_weights="inverse_square", average="macro"),
     "leave average unset"),
    (lambda: dice_loss("multiclass", 4, "batch")(torch.zeros(2, 4, 5), torch.full((2, 4, 5), 0.5)),
     "must each sum to 1"),
])
def test_bad_dense_input_gets_an_error_naming_the_argument_and_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_readme_lines_work():
    generator = torch.Generator().manual_seed(15)
    logits, labels = torch.randn(2, 4, 16, 16, generator=generator), torch.randint(0, 4, (2, 16, 16),
                                                                                   generator=generator)
    labels[0, :3] = 255
    dice = metricc.compile_metric("dice", task="multiclass", num_classes=4, average="macro", reduce="image",
                                  ignore_index=255)
    tversky = metricc.compile_metric("TP/(TP + alpha*FP + beta*FN)", params={"alpha": 0.3, "beta": 0.7},
                                     task="multilabel", num_labels=3)
    iou = metricc.compile_metric("jaccard")
    # the analysis cannot prove the power's base non-negative yet (the catalog's focal_tversky is the checked form)
    focal_tversky = metricc.compile_metric("1 - (1 - TP/(TP + 0.3*FP + 0.7*FN))**0.75", direction="maximize",
                                           check=False)
    for loss_fn, z, y in [(dice, logits, labels), (tversky, logits[:, :3], (logits[:, :3] > 0).long()),
                          (iou, logits[:, :1], labels == 1), (iou, logits[:, 0], labels == 1),
                          (focal_tversky, logits[:, 0], labels == 2)]:
        z = z.clone().requires_grad_(True)
        loss = loss_fn(z, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and z.grad.shape == z.shape


def test_compile_true_dense_multiclass_equals_eager():
    """The class paths' compiled flavour (one-hot rows and one batched product instead of a loop over images)
    gives the eager loss and gradient, with ignore_index and per-image reduction."""
    logits, labels = batch(kind="degenerate", seed=16)
    logits = logits.double()
    options = dict(task="multiclass", num_classes=4, reduce="image", ignore_index=255, relaxation="identity")
    compiled = metricc.compile_metric("mcc", compile=True, check=False, **options)
    eager = metricc.compile_metric("mcc", check=False, **options)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss_a, loss_b = compiled(a, labels), eager(b, labels)
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-15)
