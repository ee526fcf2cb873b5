"""Tests of the segmentation experiment: the data reader and its rare-foreground crops (a tiny synthetic
npz), the scores against scikit-learn, the compiled losses through the flattening adapter against MONAI,
the U-Net's size, the learning-rate rule, the command line end to end (synthetic data, then a resumed run
that trains nothing), and a smoke run on the real nuclei set where it is present."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
monai_losses = pytest.importorskip("monai.losses")

from sklearn import metrics as skm  # noqa: E402

from metricc.cli import main  # noqa: E402
from metricc.experiments import segmentation_data as data  # noqa: E402
from metricc.experiments import segmentation_losses as losses  # noqa: E402
from metricc.experiments import segmentation_protocol as protocol  # noqa: E402
from metricc.experiments.segmentation_model import UNet, count_parameters  # noqa: E402

TINY = ["--image-size", "16", "--steps", "1", "--repeats", "1", "--lr", "0.001", "-q"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def synthetic_npz(path, n=10):
    """n images of 64×64 with one 6×6 nucleus each (big enough for the full variant at 16×16, and a crop
    of the 32×32 reduction holds it on 9 of 256 pixels: 3.5 %) and a train/test split of 7/3."""
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    masks = np.zeros((n, 64, 64), dtype=np.uint8)
    for index in range(n):
        row, column = generator.integers(8, 48, 2)
        masks[index, row:row + 6, column:column + 6] = 1
        images[index, :, row:row + 6, column:column + 6] = 255
    split = np.array(["train"] * (n - 3) + ["test"] * 3)
    np.savez(path, images=images, masks=masks, split=split, ids=np.arange(n).astype(str))
    return path


# --- data ------------------------------------------------------------------------------------------------------

def test_full_and_rare_variants(tmp_path):
    path = synthetic_npz(tmp_path / "nuclei.npz")
    full = data.load_nuclei(path, "full", 16)
    assert full.images.shape == (10, 3, 16, 16) and full.masks.shape == (10, 16, 16)
    assert sorted(set(full.split)) == ["test", "train", "val"] and (full.split == "val").sum() == 1  # a fifth of 7
    assert torch.allclose(full.images.mean(dim=(1, 2, 3)), torch.zeros(10), atol=1e-5)  # standardised per image
    rare = data.load_nuclei(path, "rare", 16)
    fractions = rare.masks.double().mean(dim=(1, 2))
    assert len(rare.masks) > 0 and bool(((fractions >= data.RARE_MIN) & (fractions <= data.RARE_MAX)).all())
    for split in ("train", "val", "test"):  # a crop keeps its source image's split
        sources = set(rare.source[rare.split == split].tolist())
        assert sources <= set(np.flatnonzero(full.split == split).tolist())
    assert np.bincount(rare.source).max() <= data.CROPS_PER_IMAGE
    again = data.load_nuclei(path, "rare", 16)  # crops and split are part of the data: the same every time
    assert torch.equal(again.images, rare.images) and list(again.split) == list(rare.split)


def test_reader_errors_name_the_fix(tmp_path):
    with pytest.raises(data.SegmentationDataError, match="not found: pass --data"):
        data.load_nuclei(tmp_path / "absent.npz")
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 3, 8, 8), np.uint8), split=np.array(["train", "test"]))
    with pytest.raises(data.SegmentationDataError, match="lacks the array"):
        data.load_nuclei(tmp_path / "bad.npz")
    path = synthetic_npz(tmp_path / "nuclei.npz")
    with pytest.raises(data.SegmentationDataError, match="multiple of 8"):
        data.load_nuclei(path, "full", 20)
    with pytest.raises(data.SegmentationDataError, match="unknown variant"):
        data.load_nuclei(path, "sparse", 16)


# --- scores, losses, model -------------------------------------------------------------------------------------

def test_per_image_scores_are_scikit_learns():
    generator = torch.Generator().manual_seed(1)
    predicted = torch.rand(5, 7, 6, generator=generator) < 0.3
    truth = torch.rand(5, 7, 6, generator=generator) < 0.2
    truth[0], predicted[0] = False, False  # both empty: 1
    dice, iou = protocol.per_image_scores(predicted, truth)
    assert dice[0] == 1 and iou[0] == 1
    for k in range(1, 5):
        y, p = truth[k].flatten().numpy(), predicted[k].flatten().numpy()
        assert dice[k] == pytest.approx(skm.f1_score(y, p, zero_division=0.0), abs=1e-12)
        assert iou[k] == pytest.approx(skm.jaccard_score(y, p, zero_division=0.0), abs=1e-12)


@pytest.mark.parametrize("reduce", losses.REDUCTIONS)
@pytest.mark.parametrize("kind", ["dice", "tversky"])
def test_compiled_losses_through_the_adapter_equal_monais(kind, reduce):
    """With the identity relaxation and MONAI's smoothing written in the expression, value and gradient
    equal MONAI's sigmoid DiceLoss / TverskyLoss, per image (batch=False) and over the batch."""
    s = 1e-5
    text = {"dice": f"(2*TP + {s})/(2*TP + FP + FN + {s})", "tversky": f"(TP + {s})/(TP + 0.3*FP + 0.7*FN + {s})"}
    ours = losses.CompiledPixelLoss(text[kind], "identity", reduce)
    theirs = (monai_losses.DiceLoss(sigmoid=True, batch=reduce == "batch") if kind == "dice" else
              monai_losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, batch=reduce == "batch"))
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 8, 8, generator=generator)
    masks = (torch.rand(3, 8, 8, generator=generator) < 0.2).long()
    masks[1] = 0  # an image without foreground
    values, gradients = [], []
    for loss_fn in (lambda z: ours(z, masks), lambda z: theirs(z, masks[:, None].float())):
        z = logits.clone().requires_grad_(True)
        value = loss_fn(z)
        value.backward()
        values.append(value.item())
        gradients.append(z.grad)
    assert values[0] == pytest.approx(values[1], abs=1e-6)
    assert torch.allclose(gradients[0], gradients[1], atol=1e-6)


@pytest.mark.parametrize("reduce", losses.REDUCTIONS)
def test_the_dense_loss_equals_the_loss_of_the_flattened_pixels(reduce):
    """The experiment calls the runtime's dense layout; flattening the pixels by hand (one call per image for
    reduce='image') is the same loss and gradient, only slower."""
    loss = losses.CompiledPixelLoss("jaccard", "anyloss", reduce)
    flat = losses.CompiledPixelLoss("jaccard", "anyloss", "batch").loss  # (N,) input: one image at a time
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    masks = (torch.rand(3, 8, 8, generator=generator) < 0.2).long()
    masks[2] = 0
    results = []
    for run in (lambda z: loss(z, masks),
                lambda z: flat(z.reshape(-1), masks.reshape(-1)) if reduce == "batch" else
                torch.stack([flat(a.reshape(-1), b.reshape(-1)) for a, b in zip(z, masks)]).mean()):
        z = logits.clone().requires_grad_(True)
        value = run(z)
        value.backward()
        results.append((value.detach(), z.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-14)


def test_every_baseline_and_a_compiled_loss_train_one_step():
    specs = losses.parse_segmentation_losses("ce,bce,monai-dice,monai-dicece,monai-tversky,lovasz-softmax,"
                                             "lovasz-hinge,jaccard@anyloss")
    masks = (torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3)) < 0.2).long()
    for spec in specs:
        for reduce in losses.REDUCTIONS:
            model = UNet(3, spec.channels)
            loss = losses.build_segmentation_loss(spec, reduce)(model(torch.randn(2, 3, 16, 16)), masks)
            loss.backward()
            assert torch.isfinite(loss) and model.head.weight.grad.abs().sum() > 0, (spec.name, reduce)


def test_loss_names_are_checked_before_training():
    with pytest.raises(losses.SegmentationLossError, match="unknown loss 'dicee'"):
        losses.parse_segmentation_losses("dicee")
    with pytest.raises(losses.SegmentationLossError, match="relaxation 'soft'"):
        losses.parse_segmentation_losses("dice@soft")
    with pytest.raises(losses.SegmentationLossError, match="listed twice"):
        losses.parse_segmentation_losses("bce,BCE")
    assert [s.name for s in losses.parse_segmentation_losses("dice,jaccard@identity")] == \
        ["dice@anyloss", "jaccard@identity"]


def test_unet_is_small_and_keeps_the_image_size():
    model = UNet(3, 2)
    assert count_parameters(model) <= 1_000_000
    assert model(torch.zeros(1, 3, 24, 16)).shape == (1, 2, 24, 16)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.zeros(1, 3, 20, 16))


def test_learning_rate_rule():
    assert protocol.choose_learning_rate({1e-3: 0.5, 3e-3: 0.7, 1e-2: 0.7}) == 3e-3  # a tie: the smaller
    assert protocol.choose_learning_rate({1e-3: 0.5, 1e-2: float("nan")}) == 1e-3  # a failed run never wins


def test_paired_difference_needs_the_images_and_every_seed_to_agree():
    from metricc.experiments.segmentation_report import paired_difference

    def result(name, dice):  # dice: (seeds, test images)
        runs = [protocol.RunRecord("v", name, 1e-3, seed, [], [], list(row), list(row), 1.0, 0.0)
                for seed, row in enumerate(dice)]
        return protocol.LossResult(losses.SegmentationLoss(name, "bce"), 1e-3, {1e-3: runs[0]}, runs)

    sources = np.array([0, 0, 1, 2])
    base = np.array([[0.8, 0.7, 0.9, 0.6]] * 3)
    lift = np.array([[0.02], [0.03], [0.01]])
    d = paired_difference(result("a", base + lift), result("b", base), "dice", sources)
    assert d["mean"] == pytest.approx(0.02) and d["seed_sd"] == pytest.approx(0.01) and d["verdict"] == "better"
    assert d["low"] == pytest.approx(0.02) and d["high"] == pytest.approx(0.02)  # the same lift on every image
    mixed = paired_difference(result("a", base + lift * [[1], [1], [-0.5]]), result("b", base), "dice", sources)
    assert mixed["low"] > 0 and mixed["verdict"] == "tie"  # one seed disagrees
    worse = paired_difference(result("b", base), result("a", base + lift), "iou", sources)
    assert worse["verdict"] == "worse"


# --- command line ----------------------------------------------------------------------------------------------

def test_cli_end_to_end_and_resumed(tmp_path, capsys, monkeypatch):
    path = synthetic_npz(tmp_path / "nuclei.npz")
    out = tmp_path / "out"
    arguments = ["experiment", "--task", "segmentation", "--data", str(path), "--losses", "bce,lovasz-softmax,dice",
                 "--lr-grid", "1e-3,1e-2", "--repeats", "2", "--image-size", "16", "--steps", "2", "-q",
                 "--out", str(out)]
    assert main(arguments) == 0
    report = (out / "segmentation.md").read_text()
    assert "## nuclei-full" in report and "## nuclei-rare" in report and "| dice@anyloss |" in report
    with open(out / "segmentation_runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 2 * 3 * (2 + 1)  # variants × losses × (seeds + the rate not chosen)
    with open(out / "segmentation_differences.csv") as handle:
        assert {row["baseline"] for row in csv.DictReader(handle)} == {"bce", "lovasz-softmax"}
    for name in ("segmentation_scores.png", "segmentation_masks_full.png", "segmentation_masks_rare.png"):
        assert (out / name).stat().st_size > 0
    assert main(arguments) == 2  # reports exist
    assert "pass --force" in capsys.readouterr().err

    def refuse(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(protocol, "train_and_score", refuse)
    assert main(arguments + ["--force"]) == 0
    assert (out / "segmentation.md").read_text() == report


@pytest.mark.parametrize("flags, message", [
    (["--model", "mlp"], "--model do not apply"),
    (["--losses", "bce,focal"], "unknown loss 'focal'"),
    (["--batch-size", "0.5"], "number of images"),
    (["--data", "absent.npz"], "absent.npz not found"),
])
def test_cli_refusals(tmp_path, capsys, flags, message):
    path = synthetic_npz(tmp_path / "nuclei.npz")
    data_flags = [] if "--data" in flags else ["--data", str(path)]
    code = main(["experiment", "--task", "segmentation", *data_flags, *flags, "--out", str(tmp_path / "o"), *TINY])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_smoke_run_on_the_nuclei_set(tmp_path):
    path = data.default_data_path()
    if path is None or not path.is_file():
        pytest.skip("the nuclei set (shared/data/segmentation/dsb2018_nuclei.npz) is not here")
    out = tmp_path / "out"
    code = main(["experiment", "--task", "segmentation", "--data", str(path), "--limit-images", "6",
                 "--losses", "ce,lovasz-hinge,tversky@identity", "--out", str(out), *TINY])
    assert code == 0
    with open(out / "segmentation_images.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["variant"] for row in rows} == {"nuclei-full", "nuclei-rare"}
    assert all(0 <= float(row["dice"]) <= 1 for row in rows)
