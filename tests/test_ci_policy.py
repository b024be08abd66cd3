"""The suite's CI rule: under CI=true a skip, however raised, fails the run (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SKIPPING = '''
import pytest

def test_bare_skip():
    pytest.skip("needs frobnicator")

@pytest.mark.skipif(True, reason="needs a package")
def test_skipif():
    pass

def test_runs():
    pass
'''


def run_pytest(tmp_path, ci: str) -> subprocess.CompletedProcess:
    test_file = tmp_path / "test_skipping.py"
    test_file.write_text(SKIPPING)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(test_file)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_under_ci(tmp_path):
    proc = run_pytest(tmp_path, "true")
    assert proc.returncode != 0, proc.stdout
    assert "1 failed, 1 passed, 1 error" in proc.stdout, proc.stdout
    assert "CI=true: a skip is a failure (a missing install step?): Skipped: needs frobnicator" in proc.stdout


def test_a_skip_is_a_skip_outside_ci(tmp_path):
    proc = run_pytest(tmp_path, "")
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout, proc.stdout
