"""Plain test ids: letters, digits and underscores only.

Node ids travel on command lines (``pytest <node id>``) and through tools such as mutmut, which lose
tests whose ids hold brackets, backslashes, quotes or non-ASCII text; tables of hostile text need them.
"""

import re


def plain_id(value) -> str:
    """The value's text with every run of other characters as one underscore, at most 30 characters."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(value)).strip("_")[:30] or "_"


def numbered_ids(cases) -> list[str]:
    """One id per case: its number, then its first field's letters (the number keeps them apart)."""
    return [f"{number}_{plain_id(case[0])}" for number, case in enumerate(cases)]
