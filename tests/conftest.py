"""Shared test policy: tests that need root or a system tool skip outside CI and fail under CI=true.

Under CI=true every skip is a failure, however it was raised (skip_or_fail, a bare pytest.skip, a skipif mark):
`make test` installs everything the suite needs, so a skip there means a missing install step.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip with a clear reason; under CI a missing prerequisite is a failure, not a skip."""
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root (network namespaces, tc, privileged ports)")
    if shutil.which("ip") is None:
        skip_or_fail("needs iproute2's `ip` command")


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        skip_or_fail(f"needs `{name}` (installed by `make test` from Debian packages)")
    return path


@pytest.fixture
def root_only() -> None:
    require_root()


def logged(caplog, text: str, within: float = 5.0) -> bool:
    """Whether `text` reaches the log within `within` seconds (a handler thread may still be finishing)."""
    deadline = time.monotonic() + within
    while text not in caplog.text:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("root"):
            item.fixturenames.insert(0, "root_only")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, turn any skip into a failure that says why the test could not run."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skip is a failure (a missing install step?): {reason}"
