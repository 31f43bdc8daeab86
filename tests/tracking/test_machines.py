"""tracking/machines.py: Apple MPP prefetches and scanners flagged, people not."""

from __future__ import annotations

import pytest

from mailplane.tracking.machines import machine_reason

GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


@pytest.mark.parametrize(
    ("agent", "ip", "opening", "reason"),
    [
        ("Mozilla/5.0", "17.58.63.1", True, "apple_mpp"),
        ("", "17.0.0.1", True, "apple_mpp"),
        ("Mozilla/5.0", "17.58.63.1", False, ""),  # a click from Apple's network: a person
        (BROWSER, "17.58.63.1", True, ""),  # a real Mail client on Apple's own network
        (BROWSER, "198.51.100.7", True, ""),
        (GMAIL_PROXY, "66.249.84.1", True, ""),
        ("Barracuda Sentinel (EE)", "203.0.113.5", False, "bot"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1)", "66.249.66.1", True, "bot"),
        ("python-requests/2.31", "203.0.113.5", False, "bot"),
        ("", "203.0.113.5", False, "bot"),
        ("x" * 100_000, "not an ip", True, ""),
    ],
)  # fmt: skip
def test_reasons(agent, ip, opening, reason):
    assert machine_reason(user_agent=agent, ip=ip, opening=opening) == reason
