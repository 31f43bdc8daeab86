"""`mailplane status` against a running `mailplane serve`: every listener up, exit 0;
one service not started, that one down and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.live_service import LiveService, live_service


def _status(svc: LiveService) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "mailplane.cli", "status", "--json", "--timeout", "5"],
        env=svc.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def test_status_and_metrics_of_a_running_install(tmp_path: Path) -> None:
    with live_service(tmp_path, "web,submission,imap") as (svc, _):
        code, report = _status(svc)
        services = {s["service"]: s["up"] for s in report["services"]}  # type: ignore[attr-defined]
        assert services == {
            "smtp-submission-tls": True,
            "smtp-submission": True,
            "smtp-mx": False,  # not started (--only): down, and the exit status says so
            "imap-tls": True,
            "imap": True,
        }
        assert code == 1
        assert report["cell"] == "shared"
        assert report["queue"]["waiting"] == {"queued": 0, "deferred": 0, "held": 0}  # type: ignore[index]

        # The served /metrics, scraped from loopback as a local Prometheus would.
        with urllib.request.urlopen(svc.base + "/metrics", timeout=30) as response:
            text = response.read().decode()
        imap = svc.ports["IMAP"]
        assert f'mailplane_service_up{{cell="shared",port="{imap}",service="imap-tls"}} 1.0' in text
        assert 'service="smtp-mx"} 0.0' in text


def test_status_exits_zero_when_everything_answers(tmp_path: Path) -> None:
    with live_service(tmp_path, "web,submission,mx,imap") as (svc, _):
        code, report = _status(svc)
        assert all(s["up"] for s in report["services"]), report  # type: ignore[attr-defined]
        assert code == 0
