"""The SSRF guard: in production no webhook reaches a private, loopback, link-local,
multicast or reserved address, whether written as an address or resolved from a name;
the setting lets embedded installs and tests call local receivers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from mailplane.core.errors import ValidationFailed
from mailplane.webhooks.guard import (
    AddressRefused,
    address_forbidden,
    target_resolve,
    url_check,
)
from mailplane.webhooks.models import WebhookAttempt, WebhookDelivery
from mailplane.webhooks.runner import WebhookWorker
from tests.webhooks.conftest import Hooked, send

FORBIDDEN = [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::",
    "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "192.0.2.1", "198.18.0.1", "2001:db8::1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"]


@pytest.fixture
def production(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "WEBHOOKS_ALLOW_PRIVATE": False}


@pytest.mark.parametrize("address", FORBIDDEN)
def test_non_public_addresses_are_forbidden(address):
    assert address_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert not address_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/",
        "https://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0:80/",
    ],
)
def test_a_private_address_in_the_url_is_refused_when_stored(production, url):
    with pytest.raises(ValidationFailed) as refused:
        url_check(url)
    assert "url" in refused.value.details


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///nohost",
        "http://user:pass@example.com/",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "https://" + "a" * 64 + ".com/",
        "https://example.com/" + "x" * 2000,
        "javascript:alert(1)",
    ],
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(ValidationFailed) as refused:
        url_check(url)
    assert "url" in refused.value.details


def test_names_are_resolved_and_every_address_checked(production):
    target = url_check("http://localhost:9/")  # a name: stored, checked when called
    with pytest.raises(AddressRefused, match="non-public"):
        asyncio.run(target_resolve(target))


def test_the_setting_allows_local_addresses(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "WEBHOOKS_ALLOW_PRIVATE": True}
    target = url_check("http://localhost:9/")
    assert asyncio.run(target_resolve(target)).is_loopback
    assert url_check("http://127.0.0.2:9/").literal == ipaddress.ip_address("127.0.0.2")


def test_production_never_calls_a_local_receiver(hooked: Hooked, settings):
    """The endpoint was stored while allowed; once the setting is off (production), the
    worker refuses at call time, records why, and the receiver sees nothing."""
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "WEBHOOKS_ALLOW_PRIVATE": False,
        "WEBHOOKS_RETRY_SCHEDULE": "0.05",
    }
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    assert hooked.receiver.received == []
    attempts = list(WebhookAttempt.objects.all())
    assert len(attempts) == 2
    assert all("must not point to a private" in a.error for a in attempts)
    assert all(a.status_code is None for a in attempts)
    assert WebhookDelivery.objects.get().state == "failed"


def test_a_name_resolving_to_a_local_address_is_not_called(hooked: Hooked, settings):
    """`localhost` as the host: the name resolves to 127.0.0.1 and is refused (a public
    name whose DNS answers a private address is refused the same way)."""
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "WEBHOOKS_ALLOW_PRIVATE": False,
        "WEBHOOKS_RETRY_SCHEDULE": "",
    }
    hooked.endpoint.url = f"http://localhost:{hooked.receiver.port}/hook"
    hooked.endpoint.save()
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    assert hooked.receiver.received == []
    (attempt,) = WebhookAttempt.objects.all()
    assert "localhost resolves to a non-public address" in attempt.error


def _fake_dns(monkeypatch, answers):
    """socket.getaddrinfo answering `hooks.rebind.test` from `answers` (one list of
    addresses per lookup, the last repeated): a DNS server that rebinds."""
    real = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "hooks.rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        addresses = answers[min(len(lookups), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0))) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_one_private_address_among_public_ones_is_refused(production, monkeypatch):
    _fake_dns(monkeypatch, [["93.184.216.34", "10.0.0.5"]])
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.5"):
        asyncio.run(target_resolve(url_check("https://hooks.rebind.test/")))


def test_the_connection_goes_to_the_checked_address(hooked: Hooked, monkeypatch):
    """Pinning: the name is resolved once, checked, and connected to; a second answer
    (DNS rebinding to another address, here one where nothing listens) is never asked
    for. `Host` keeps the name."""
    lookups = _fake_dns(monkeypatch, [[hooked.receiver.host], ["127.0.0.9"]])
    hooked.endpoint.url = f"http://hooks.rebind.test:{hooked.receiver.port}/hook"
    hooked.endpoint.save()
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    (got,) = hooked.receiver.accepted()
    assert got.headers["host"] == f"hooks.rebind.test:{hooked.receiver.port}"
    assert lookups == ["hooks.rebind.test"]
