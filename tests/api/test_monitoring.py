"""GET /metrics (who may scrape, what it says) and GET /api/status/ (an account's view)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from mailplane.monitoring.probes import probes_recent
from mailplane.queue.services import message_enqueue
from tests.support.fixtures import Account
from tests.support.live_service import free_port

RAW = b"From: a@acme.test\r\nTo: x@dest.test\r\nSubject: m\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def _nothing_listening(settings: Any) -> Any:
    """Every listener on a port where nothing listens: probes answer at once, down."""
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "SMTP_BIND": "127.0.0.1",
        "IMAP_BIND": "127.0.0.1",
        **{
            name: free_port()
            for name in (
                "SMTP_PORT",
                "SUBMISSION_PORT",
                "MX_PORT",
                "IMAP_PORT",
                "IMAP_STARTTLS_PORT",
            )
        },
    }
    probes_recent.clear()
    yield
    probes_recent.clear()


def _embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)  # config.embedded_mode() reads it


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], name: str, **labels: str) -> float:
    for sample in families[name].samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_loopback_scrape_of_an_embedded_install(
    account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    _embedded(monkeypatch)
    message_enqueue(
        organization=account.org,
        mail_from="a@acme.test",
        recipients=["x@dest.test", "y@dest.test", "z@dest.test"],
        raw=RAW,
    )
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = _families(response.content.decode())
    assert _value(families, "mailplane_queue_recipients", cell="shared", status="queued") == 3
    assert _value(families, "mailplane_queue_due_recipients", cell="shared") == 3
    assert _value(families, "mailplane_events_last_sequence", cell="shared") >= 3
    # Nothing listens on the configured ports: each listener is reported down.
    services = {s.labels["service"]: s.value for s in families["mailplane_service_up"].samples}
    assert services == {
        "smtp-submission-tls": 0.0,
        "smtp-submission": 0.0,
        "smtp-mx": 0.0,
        "imap-tls": 0.0,
        "imap": 0.0,
    }


def test_the_cell_label_follows_the_setting(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _embedded(monkeypatch)
    settings.MAILPLANE = {**settings.MAILPLANE, "CELL": "acme-dedicated"}
    for loopback in ("::1", "::ffff:127.0.0.1", "127.0.0.53"):
        families = _families(Client(REMOTE_ADDR=loopback).get("/metrics").content.decode())
        assert _value(families, "mailplane_jobs_pending", cell="acme-dedicated") == 0


@pytest.mark.parametrize(
    "address", ["10.0.0.5", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.5", "junk"]
)
def test_without_a_token_other_clients_are_refused(
    db: Any, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    _embedded(monkeypatch)
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 403
    error = response.json()["error"]  # the one error shape (api/errors.py)
    assert error["code"] == "not_allowed" and "MAILPLANE_METRICS_TOKEN" in error["message"]


def test_a_forwarded_for_header_does_not_make_a_client_loopback(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _embedded(monkeypatch)
    response = Client(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="127.0.0.1").get("/metrics")
    assert response.status_code == 403


def test_production_without_a_token_is_closed_even_to_loopback(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a reverse proxy on the same host every client would look like loopback."""
    monkeypatch.setenv("DATABASE_URL", "postgres://example.invalid/x")
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token",
        "Bearer ",
        "Basic c2NyYXBlLXRva2VuLTE=",
        "Bearer " + "x" * 20_000,
        "Bearer scrape-token-1\x00",
        "Bearer scrapé-token-1",
    ],
)
def test_with_a_token_only_its_bearer_scrapes(
    db: Any, settings: Any, authorization: str | None
) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "METRICS_TOKEN": "scrape-token-1"}
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_token_opens_metrics_from_anywhere(db: Any, settings: Any) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "METRICS_TOKEN": "scrape-token-1"}
    response = Client(REMOTE_ADDR="203.0.113.9").get(
        "/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-1"
    )
    assert response.status_code == 200
    assert "mailplane_queue_recipients" in response.content.decode()


def test_metrics_takes_only_get(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _embedded(monkeypatch)
    client = Client(REMOTE_ADDR="127.0.0.1")
    assert client.post("/metrics", data=b"x" * 1000, content_type="text/plain").status_code == 405
    assert client.delete("/metrics").status_code == 405


def test_status_shows_the_cell_and_only_the_accounts_own_queue(
    account: Account, other_account: Account
) -> None:
    message_enqueue(
        organization=other_account.org,
        mail_from="o@other.test",
        recipients=[f"r{i}@dest.test" for i in range(4)],
        raw=RAW,
    )
    message_enqueue(
        organization=account.org, mail_from="a@acme.test", recipients=["x@dest.test"], raw=RAW
    )
    body = account.client.get("/api/status/").json()
    assert body["cell"] == "shared"
    assert body["queue"]["queued"] == 1  # not the other account's four
    assert body["queue"]["due"] == 1
    assert {s["service"] for s in body["services"]} == {
        "smtp-submission-tls",
        "smtp-submission",
        "smtp-mx",
        "imap-tls",
        "imap",
    }
    assert not any(s["up"] for s in body["services"])
    assert other_account.client.get("/api/status/").json()["queue"]["queued"] == 4


def test_status_needs_a_key(db: Any) -> None:
    response = Client().get("/api/status/")
    assert response.status_code == 401
