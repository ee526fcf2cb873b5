"""The named metrics, read from ``grammar/catalog.toml``.

The grammar folder lives at the top of the repository and is installed as
``metricc/grammar`` (see pyproject.toml), so both places are searched.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

from .metric import DIRECTIONS

_PACKAGE_DIR = Path(__file__).resolve().parent


def grammar_dir() -> Path:
    """The folder holding ``metric.ebnf`` and ``catalog.toml``."""
    for candidate in (_PACKAGE_DIR / "grammar", _PACKAGE_DIR.parent / "grammar"):
        if (candidate / "catalog.toml").is_file():
            return candidate
    raise FileNotFoundError(
        "metricc's grammar folder (catalog.toml, metric.ebnf) is missing from "
        f"{_PACKAGE_DIR / 'grammar'}; reinstall metricc"
    )


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One named metric: its expression text, defaults and documentation."""

    name: str
    expression: str
    direction: str
    params: tuple[tuple[str, float], ...]
    description: str
    reference: str

    @property
    def default_params(self) -> dict[str, float]:
        return dict(self.params)


def _entry_from_table(name: str, table: Mapping) -> CatalogEntry:
    where = f"catalog entry [{name}]"
    if not name.isidentifier():
        raise ValueError(f"{where}: the name must be a Python identifier")
    unknown = set(table) - {"expression", "direction", "params", "description", "reference"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    direction = table.get("direction")
    if direction not in DIRECTIONS:
        raise ValueError(f"{where}: direction must be one of {DIRECTIONS}, got {direction!r}")
    params = {}
    for key, value in table.get("params", {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: parameter {key!r} needs a finite number, got {value!r}")
        params[key] = float(value)
    return CatalogEntry(
        name=name,
        expression=str(table["expression"]),
        direction=direction,
        params=tuple(sorted(params.items())),
        description=str(table.get("description", "")),
        reference=str(table.get("reference", "")),
    )


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, CatalogEntry]:
    """All named metrics, in the order of the catalog file."""
    with open(grammar_dir() / "catalog.toml", "rb") as handle:
        tables = tomllib.load(handle)
    return {name: _entry_from_table(name, table) for name, table in tables.items()}


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry called ``name`` (case-insensitive), or None."""
    return catalog().get(name.lower()) if isinstance(name, str) else None


def closest_names(name: str, limit: int = 3) -> list[str]:
    """Catalog names that look like ``name``, for "did you mean" hints."""
    return difflib.get_close_matches(name.lower(), list(catalog()), n=limit, cutoff=0.5)
