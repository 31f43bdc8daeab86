"""The missing-tool rule itself: skipped locally, failed under CI=true, except mode skips."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import pytest

from tests.support.tools import environment_missing, require_tool, requires_tool, skip_for_mode


def test_tool_called_for():
    require_tool("no-such-tool-for-mailplane")


@requires_tool("no-such-tool-for-mailplane")
def test_tool_marked():
    pass


def test_environment():
    environment_missing("no Redis here")


def test_other_pass():
    skip_for_mode("PostgreSQL only")


@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_failure():
    assert False


def test_present_tool_is_found():
    assert require_tool("sh").endswith("/sh")
"""


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None):
    pytester.makepyfile(test_inner=INNER)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess(
        "-p", "tests.support.tools", "-p", "no:django", "-p", "no:cacheprovider", "-rA"
    )


def test_missing_tools_skip_on_a_developer_machine(pytester, monkeypatch):
    result = run_inner(pytester, monkeypatch, ci=None)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    result.stdout.fnmatch_lines(["*no-such-tool-for-mailplane is not installed (apt-get install*"])


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_tools_fail_under_ci(pytester, monkeypatch, ci):
    result = run_inner(pytester, monkeypatch, ci=ci)
    # Tool checks in a test body or a mark, and a missing service: failures (reported as
    # errors where the skip came from setup). The other pass's test stays a skip.
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 3, outcomes
    assert (outcomes.get("skipped"), outcomes.get("passed"), outcomes.get("xfailed")) == (1, 1, 1)
    result.stdout.fnmatch_lines(["*CI=true: a skipped test is a failure*"])
    assert result.ret != 0
