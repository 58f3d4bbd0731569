"""A test that runs out of time fails alone, and the run goes on (tests/support/phase_timeout.py).

Each case runs a small pytest session in a subprocess, once with pytest-timeout alone (to show the
failure the plugin exists for) and once with the plugin, with the project's own settings: warnings are
errors, timeouts by signal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INNER_SETTINGS = """
[pytest]
timeout = 1
filterwarnings = error
asyncio_default_fixture_loop_scope = function
asyncio_mode = auto
"""

# A reporting hook that takes longer than the test's budget, as hypothesis's can on a loaded machine.
INNER_CONFTEST = """
import time
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    if call.when == "call" and item.get_closest_marker("slow_report"):
        time.sleep(1.5)
    return (yield)

def pytest_configure(config):
    config.addinivalue_line("markers", "slow_report: the report of this test is slow to make")
"""

INNER_TESTS = """
import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

RELEASED = Path(__file__).with_name("released")

@settings(deadline=None, max_examples=20, database=None)
@given(st.integers())
def test_hypothesis_past_its_budget(x):
    time.sleep(0.2)

@pytest.fixture
async def resource():
    yield "held"
    RELEASED.write_text("released")

async def test_async_past_its_budget(resource):
    await asyncio.sleep(5)

@pytest.mark.slow_report
def test_with_a_slow_report():
    assert True

def test_after_them():
    assert True
"""


def _run_session(tmp_path: Path, *, plugin: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(INNER_SETTINGS)
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"]
    if plugin:
        args += ["-p", "tests.support.phase_timeout"]
    return subprocess.run(
        args,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pytest_timeout_alone_ends_the_session_when_the_alarm_falls_in_a_hook(tmp_path: Path) -> None:
    result = _run_session(tmp_path, plugin=False)
    assert "INTERNALERROR" in result.stdout + result.stderr
    assert "PASSED test_inner.py::test_after_them" not in result.stdout


def test_a_timed_out_test_fails_alone_and_the_run_goes_on(tmp_path: Path) -> None:
    result = _run_session(tmp_path, plugin=True)
    output = result.stdout + result.stderr
    assert "INTERNALERROR" not in output, output
    assert "FAILED test_inner.py::test_hypothesis_past_its_budget" in output, output
    assert "FAILED test_inner.py::test_async_past_its_budget" in output, output
    assert "Timeout (>1s) from pytest-timeout, in the test." in output, output
    assert "PASSED test_inner.py::test_with_a_slow_report" in output, output
    assert "PASSED test_inner.py::test_after_them" in output, output
    assert "2 failed, 2 passed" in output, output
    assert result.returncode == 1
    # The timed-out test's fixture was still torn down.
    assert (tmp_path / "released").read_text() == "released"
