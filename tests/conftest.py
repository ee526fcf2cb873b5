"""Suite-wide settings: hypothesis's profile, seeded global generators, the ``slow`` marker, time per file.

* The hypothesis profile of ``METRICC_PROFILE`` (``ci`` by default: derandomized, no example database;
  ``thorough``: random, with a database) is loaded for every test, so a bare ``@given`` follows it too.
* Every test starts with Python's, numpy's and torch's global generators seeded from a constant: a test
  that forgets its own ``torch.Generator`` still draws the same numbers on every run.
* Tests marked ``slow`` run with ``-m slow`` or ``METRICC_PROFILE=thorough`` and are skipped otherwise.
* With ``--durations``, the summary also lists the time spent per test file.
"""

import collections
import random

import numpy as np
import pytest
import torch

GLOBAL_SEED = 20240917


def pytest_configure(config):
    try:
        from hypothesis import settings

        from metricc.testing import profile, register_profiles
    except ImportError:  # hypothesis is part of the test extra; the non-property tests run without it
        return
    register_profiles()
    settings.load_profile(f"metricc-{profile()}")


@pytest.fixture(autouse=True)
def _seeded_global_generators():
    random.seed(GLOBAL_SEED)
    np.random.seed(GLOBAL_SEED % 2**32)
    torch.manual_seed(GLOBAL_SEED)
    yield


def _runs_slow_tests(config) -> bool:
    import os

    return "slow" in (config.getoption("markexpr") or "") or \
        os.environ.get("METRICC_PROFILE", "ci").strip().lower() == "thorough"


def pytest_collection_modifyitems(config, items):
    if _runs_slow_tests(config):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or METRICC_PROFILE=thorough")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


_FILE_SECONDS = collections.Counter()


def pytest_runtest_logreport(report):
    _FILE_SECONDS[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if config.getoption("durations", None) is None or not _FILE_SECONDS:
        return
    terminalreporter.write_sep("=", "time per test file (setup + call + teardown)")
    for path, seconds in _FILE_SECONDS.most_common():
        terminalreporter.write_line(f"{seconds:8.1f}s  {path}")
    terminalreporter.write_line(f"{sum(_FILE_SECONDS.values()):8.1f}s  in all")
