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
    aliases: tuple[str, ...] = ()

    @property
    def default_params(self) -> dict[str, float]:
        return dict(self.params)

    @property
    def is_curve(self) -> bool:
        """A metric of the curve over the thresholds (curve_area, curve_sum), not of one confusion matrix."""
        return self.expression.lstrip().startswith(("curve_area(", "curve_sum("))


def _entry_from_table(name: str, table: Mapping) -> CatalogEntry:
    where = f"catalog entry [{name}]"
    if not name.isidentifier():
        raise ValueError(f"{where}: the name must be a Python identifier")
    unknown = set(table) - {"expression", "direction", "params", "description", "reference", "aliases"}
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
    aliases = table.get("aliases", [])
    if not (isinstance(aliases, list) and all(isinstance(a, str) and a.isidentifier() for a in aliases)):
        raise ValueError(f"{where}: aliases must be a list of identifiers, got {aliases!r}")
    return CatalogEntry(
        name=name,
        expression=str(table["expression"]),
        direction=direction,
        params=tuple(sorted(params.items())),
        description=str(table.get("description", "")),
        reference=str(table.get("reference", "")),
        aliases=tuple(aliases),
    )


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, CatalogEntry]:
    """All named metrics, in the order of the catalog file."""
    with open(grammar_dir() / "catalog.toml", "rb") as handle:
        tables = tomllib.load(handle)
    entries = {name: _entry_from_table(name, table) for name, table in tables.items()}
    _names(entries)  # refuses an alias that collides with a name or another alias
    return entries


def _names(entries: Mapping[str, CatalogEntry]) -> dict[str, CatalogEntry]:
    """Every name and alias (lower case) → its entry."""
    names = {name.lower(): entry for name, entry in entries.items()}
    for entry in entries.values():
        for alias in entry.aliases:
            if alias.lower() in names:
                raise ValueError(f"catalog entry [{entry.name}]: alias {alias!r} is already the name or an alias "
                                 f"of [{names[alias.lower()].name}]")
            names[alias.lower()] = entry
    return names


@functools.lru_cache(maxsize=1)
def _all_names() -> dict[str, CatalogEntry]:
    return _names(catalog())


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry called ``name`` or aliased so (``f1_score`` → f1), case-insensitive; or None."""
    return _all_names().get(name.lower()) if isinstance(name, str) else None


def closest_names(name: str, limit: int = 3) -> list[str]:
    """Catalog names (and aliases) that look like ``name``, for "did you mean" hints."""
    return difflib.get_close_matches(name.lower(), list(_all_names()), n=limit, cutoff=0.5)
