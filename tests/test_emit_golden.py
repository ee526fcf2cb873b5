"""The generated modules, character for character, against reviewed copies in ``tests/golden/``.

The generated file is what a user reads, diffs and commits: its docstring (the derivation), the names of
its temporaries, its definition and options. The other emitter tests check that the code computes the right
thing; these check that nothing else in the text changes unnoticed. A deliberate change regenerates them:

    METRICC_UPDATE_GOLDEN=1 python -m pytest tests/test_emit_golden.py

and the diff of ``tests/golden/`` is reviewed like code.
"""

import os
import warnings
from pathlib import Path

import pytest

import metricc

GOLDEN = Path(__file__).with_name("golden")

# One case per part of the template: named sums and their roots (mcc), parameters and the multi-class
# header (fbeta), a rule for class weights with pixels ignored per image (dice), the written domain and a
# metric named like the runtime's own class (metric), thresholds averaged, a minimized metric, a curve,
# multi-label, and a reduction per image.
CASES = {
    "f1": dict(metric="f1"),
    "mcc_linear": dict(metric="mcc", relaxation="linear"),
    "fbeta_multiclass": dict(metric="fbeta", params={"beta": 2.0}, task="multiclass", num_classes=3,
                             average="weighted", relaxation="sigmoid:L=30,threshold=0.4"),
    "dice_dense": dict(metric="dice", task="multiclass", num_classes=4, reduce="image",
                       ignore_index=255, class_weights="inverse_square", zero_division=1.0),
    "written_domain": dict(metric="TP/n*FP/FP", name="metric", thresholds=[0.25, 0.5, 0.75], from_logits=False),
    "minimized": dict(metric="(FP + FN)/n", name="error_rate", direction="minimize", relaxation="sol",
                      estimator="running", momentum=0.5, validate=False, reduction="none"),
    "curve": dict(metric="curve_area(TP/P, FP/N)", name="auroc"),
    # Multi-label with two parameters and two thresholds, pixels ignored but no class-weight rule; and a
    # reduction per image with nothing ignored: the header's shapes and its reduction line without either.
    "tversky_multilabel": dict(metric="tversky", task="multilabel", num_classes=3, thresholds=[0.3, 0.6],
                               ignore_index=255),
    "jaccard_per_image": dict(metric="jaccard", reduce="image"),
}


def _source(case: dict) -> str:
    options = dict(case)
    metric = options.pop("metric")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metricc.compile_metric(metric, **options).source


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_module_is_the_reviewed_text(name):
    source = _source(CASES[name])
    path = GOLDEN / f"{name}.py.txt"
    if os.environ.get("METRICC_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(source, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert source == expected, f"{path.name} differs; if the change is deliberate, regenerate (see this module)"


def test_a_standalone_module_is_the_runtime_then_the_same_generated_text():
    loss = metricc.compile_metric("f1")
    standalone = loss.standalone_source()
    (imports,) = [line for line in loss.source.splitlines() if line.startswith("from metricc.runtime import ")]
    inlined = ("# ---- metricc.runtime, inlined verbatim from metricc/runtime.py: the code every metric shares ----\n\n"
               + metricc.emit.runtime_source().rstrip() + "\n\n\n# ---- the loss generated for this metric ----\n")
    assert standalone == loss.source.replace(imports + "\n", inlined, 1)
    assert "from metricc" not in standalone.split("# ---- the loss generated for this metric ----")[1]
