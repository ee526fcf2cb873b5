"""The package's imports follow the pipeline: parse → analyze → derive → emit → load.

Read from the source with ``ast`` (nothing is imported), every ``import`` anywhere in a
module counts, lazy ones inside functions included: a stage may import its own or an
earlier stage, never a later one, directly or through a helper module that is not in the
table below (the check follows those transitively).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metricc"

# Stage of each module; a module may import only modules of its own stage or an earlier one.
STAGES = {
    # the IR and what every stage uses; the runtime imports only torch (generated modules import it)
    "errors": 0, "budget": 0, "metric": 0, "catalog": 0, "signs": 0, "runtime": 0, "curves": 0,
    # the limits and the names every Metric is checked against, and safe file writing
    "limits": 0, "names": 0, "files": 0,
    "parse": 1,
    # the analysis and its helpers; simplify sits here because analyze and derive both tidy
    "analyze": 2, "domain": 2, "interval": 2, "simplify": 2,
    # relax is a helper of derive (and of what follows)
    "derive": 3, "relax": 3,
    "emit": 4,
    "load": 5,
}
# On top: they may import any stage (the public API, the command line, the test strategies, experiments).
TOP = {"__init__", "__main__", "cli", "functional", "testing", "experiments"}


def imported_modules(path: Path) -> set[str]:
    """The metricc modules ``path`` imports (first component below ``metricc``), wherever the import is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(PACKAGE).parent.parts)  # where ``from .`` points, below metricc
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] == "metricc"]
            found.update(name.split(".")[1] for name in names if "." in name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "metricc":
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.add(parts[0])
            else:  # from . import x, y: the names are modules (or the package's own exports)
                found.update(alias.name for alias in node.names)
    return found


def package_modules() -> dict[str, Path]:
    """Top-level module (or subpackage) name → its files."""
    modules: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        modules.setdefault(top, []).append(path)
    return modules


MODULES = package_modules()
IMPORTS = {name: set().union(*(imported_modules(p) for p in paths)) - {name} for name, paths in MODULES.items()}


def reachable(name: str) -> dict[str, list[str]]:
    """Modules ``name`` imports directly or through modules without a stage, with the chain that reaches each."""
    chains = {name: [name]}
    pending = [name]
    while pending:
        current = pending.pop()
        for imported in IMPORTS.get(current, set()):
            if imported in chains or imported not in MODULES:
                continue
            chains[imported] = chains[current] + [imported]
            if imported not in STAGES and imported not in TOP:  # a helper: follow it
                pending.append(imported)
    del chains[name]
    return chains


def test_the_stage_table_names_real_modules():
    assert set(STAGES) <= set(MODULES), sorted(set(STAGES) - set(MODULES))
    assert {"parse", "analyze", "derive", "emit", "load", "simplify"} <= set(STAGES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_imports_a_later_stage(name):
    later = {imported: chain for imported, chain in reachable(name).items()
             if imported in TOP or STAGES.get(imported, -1) > STAGES[name]}
    assert not later, f"metricc.{name} (stage {STAGES[name]}) imports a later stage: " + "; ".join(
        " → ".join(chain) for chain in later.values())


def test_analyze_and_derive_no_longer_import_each_other():
    assert "derive" not in IMPORTS["analyze"]
    assert "simplify" in IMPORTS["analyze"] and "simplify" in IMPORTS["derive"]


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    # The reader itself, on a module written for the purpose: a later stage imported inside a function.
    module = tmp_path / "sample.py"
    module.write_text("from .metric import TP\n\ndef late():\n    from .derive import derive\n"
                      "    from . import load\n    import metricc.emit\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        assert imported_modules(module) == {"metric", "derive", "load", "emit"}
    finally:
        PACKAGE = saved
