"""External programs the tests drive (swaks, opendkim-testmsg, node/npm), and the rule for
when one is missing.

On a developer's machine a test whose tool is missing is skipped, and the skip says how to
install it. With CI=true every skip is a failure (rule 4: CI must not go green by not
running a test), except a *mode* skip: a test that belongs to the other pass of
scripts/test (PostgreSQL only, say), which CI runs there. The pytest hook below is the one
place that decides; `require_tool`, `requires_tool` and `skip_for_mode` only word the skip.
scripts/test installs every tool listed in TOOLS when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

# command -> Debian package that provides it (scripts/test installs the same list).
TOOLS = {
    "swaks": "swaks",
    "opendkim-testmsg": "opendkim-tools",
    "node": "nodejs",
    "npm": "npm",
    "unshare": "util-linux",
    "chromium": "chromium",  # headless, driven by Playwright (tests/e2e/test_docs_page.py)
    "rspamd": "rspamd",  # MI Shield's scanner (tests/shield/)
}

MODE_SKIP = "[other pass] "

# Dovecot's imaptest is no Debian package: its source and build script live in the shared
# tools folder beside the checkout (../shared/tools/imaptest), or MAILPLANE_IMAPTEST_DIR.
IMAPTEST_ENV = "MAILPLANE_IMAPTEST_DIR"


def imaptest_dir() -> Path | None:
    """The imaptest tools folder (build.sh, run-compliance.sh), if there is one."""
    configured = os.environ.get(IMAPTEST_ENV)
    if configured:
        return Path(configured)
    repo = Path(__file__).resolve().parents[2]
    # Beside the checkout, or (a clone made elsewhere, as CI's may be) the workplace's own.
    candidates = [a / "shared" / "tools" / "imaptest" for a in repo.parents]
    candidates.append(Path("/work/shared/tools/imaptest"))
    for candidate in candidates:
        if (candidate / "run-compliance.sh").exists():
            return candidate
    return None


def imaptest_build(timeout: float = 900) -> tuple[Path | None, str]:
    """Build imaptest if needed (its build.sh: instant once built; apt-get needs root).

    Returns the tools folder, or None and why (scripts/test calls this before the suite;
    the test calls it again and treats None as a missing tool).
    """
    tools = imaptest_dir()
    if tools is None:
        return None, f"imaptest tools not found (../shared/tools/imaptest or {IMAPTEST_ENV})"
    built = subprocess.run(
        ["bash", str(tools / "build.sh")], capture_output=True, text=True, timeout=timeout
    )
    if built.returncode != 0:
        return None, f"imaptest did not build: {built.stderr[-500:]}"
    return tools, ""


def packages_missing() -> list[str]:
    """The Debian packages to install for the tools not on PATH (scripts/test asks)."""
    return sorted({package for name, package in TOOLS.items() if shutil.which(name) is None})


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_reason(name: str) -> str:
    package = TOOLS.get(name, name)
    return f"{name} is not installed (apt-get install -y {package}; scripts/test does it as root)"


def require_tool(name: str) -> str:
    """The tool's path; else skip (locally) or fail (CI) the test that needs it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(missing_reason(name))
    return path


def requires_tool(*names: str) -> pytest.MarkDecorator:
    """Mark form of require_tool, for tests that run the tool themselves."""
    absent = [n for n in names if shutil.which(n) is None]
    return pytest.mark.skipif(bool(absent), reason="; ".join(map(missing_reason, absent)))


def environment_missing(reason: str) -> NoReturn:
    """Something a tool needs besides itself (root, a free port 53): treated as missing."""
    pytest.skip(reason)


def skip_for_mode(reason: str) -> NoReturn:
    """Not this pass's test (e.g. PostgreSQL only in the SQLite pass): a skip even in CI,
    because scripts/test runs the other pass too."""
    pytest.skip(MODE_SKIP + reason)


def _reason(report: pytest.TestReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if MODE_SKIP in reason:
        return
    report.outcome = "failed"
    report.longrepr = f"CI=true: a skipped test is a failure ({reason})"
