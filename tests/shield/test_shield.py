"""MI Shield: the built-in checks, the send API refusing what its server's threshold
refuses (422 with the reasons), and a real rspamd (Debian's, with the configuration
`mailplane serve` writes) rejecting a spammy message while a clean one passes."""

from __future__ import annotations

import base64
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailplane.sending.compose import message_compose
from mailplane.sending.requests import send_request_parse
from mailplane.shield.checks import Content, builtin_symbols, symbols_of
from mailplane.shield.rspamd import RspamdUnavailable, rspamd_check
from mailplane.shield.rspamd_service import rspamd_command
from mailplane.shield.services import content_check
from tests.support.live_service import free_port, live_service
from tests.support.servers import ServerAccess, send_body, server_make
from tests.support.tools import require_tool
from tests.tracking.conftest import tracked  # noqa: F401

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _raw(**fields: object) -> bytes:
    return message_compose(send_request_parse(send_body(**fields)))


def _names(raw: bytes, *, broadcast: bool = False) -> set[str]:
    return {s.name for s in builtin_symbols(raw, broadcast=broadcast)}


def test_a_clean_message_has_no_symbols() -> None:
    assert _names(_raw(text="Your order ships tomorrow.", html="<p>Your order ships.</p>")) == set()


def test_each_builtin_check() -> None:
    assert _names(_raw(text=None, html="<p>Hello there, a long enough paragraph.</p>")) == {
        "NO_TEXT_PART"
    }
    assert _names(_raw(text=None, html='<img src="https://acme.test/a.png">')) == {
        "NO_TEXT_PART",
        "IMAGE_ONLY",
    }
    assert _names(_raw(text="Deal: https://bit.ly/3abc and http://www.tinyurl.com/x")) == {
        "URL_SHORTENER"
    }
    exe = {"filename": "invoice.pdf.exe", "content": base64.b64encode(b"MZ").decode(),
           "content_type": "application/octet-stream"}  # fmt: skip
    assert _names(_raw(attachments=[exe])) == {"DANGEROUS_ATTACHMENT"}
    assert _names(_raw(), broadcast=True) == {"BROADCAST_NO_UNSUBSCRIBE"}
    assert (
        _names(_raw(headers={"List-Unsubscribe": "<https://acme.test/u>"}), broadcast=True) == set()
    )


def test_hostile_bodies_are_checked_in_bounded_time() -> None:
    started = time.monotonic()
    for raw in (
        b"",
        b"\r\n" * 100_000,
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\n" * 20_000,
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nhi\r\n",
        b"Subject: x\r\n\r\n" + b"http://" + b"a." * 50_000 + b"\r\n",
    ):
        builtin_symbols(raw, broadcast=True)
    assert time.monotonic() - started < 10


@pytest.fixture
def live(account: Any) -> ServerAccess:
    from tests.support.fixtures import verified_domain

    verified_domain(account, "acme.test")
    return server_make(account)


def test_the_send_api_refuses_what_the_threshold_refuses(live: ServerAccess) -> None:
    exe = {"filename": "setup.exe", "content": base64.b64encode(b"MZ").decode(),
           "content_type": "application/octet-stream"}  # fmt: skip
    refused = live.client.post("/api/email/", send_body(attachments=[exe]), format="json")
    assert refused.status_code == 422, refused.content
    error = refused.json()["error"]
    assert error["code"] == "content_rejected"
    assert error["details"]["content"][0].startswith("DANGEROUS_ATTACHMENT (10)")
    # A shortener alone scores 2.5: sent, unless the server's threshold is that strict.
    shortened = send_body(text="See https://bit.ly/3abc")
    assert live.client.post("/api/email/", shortened, format="json").status_code == 200
    server = live.account.client.patch(
        f"/api/servers/{live.server.pk}/", {"content_threshold": 2.5}, format="json"
    )
    assert server.status_code == 200 and server.json()["content_threshold"] == 2.5
    assert live.client.post("/api/email/", shortened, format="json").status_code == 422
    # Off: sent whatever it scores.
    live.account.client.patch(
        f"/api/servers/{live.server.pk}/", {"content_filter": "off"}, format="json"
    )
    assert (
        live.client.post("/api/email/", send_body(attachments=[exe]), format="json").status_code
        == 200
    )


def test_a_shortener_is_seen_behind_the_tracking_rewrite(tracked: ServerAccess) -> None:  # noqa: F811
    """The checks read the links as the sender wrote them: once rewritten for click
    tracking, every link points at the tracking domain and a shortener would hide."""
    tracked.account.client.patch(
        f"/api/servers/{tracked.server.pk}/", {"content_threshold": 2.5}, format="json"
    )
    html = '<p>Our offer: <a href="https://bit.ly/3abc">here</a>, see you soon.</p>'
    body = send_body(text="Our offer is at the link in the HTML part.", html=html)
    refused = tracked.client.post("/api/email/", body, format="json")
    assert refused.status_code == 422, refused.content
    assert refused.json()["error"]["details"]["content"][0].startswith("URL_SHORTENER (2.5)")
    plain = body | {"html": html.replace("bit.ly", "acme.test")}
    assert tracked.client.post("/api/email/", plain, format="json").status_code == 200


def test_the_send_apis_checks_agree_with_parsing_the_message() -> None:
    """The send API hands the checks the request's own parts instead of parsing back what
    it composed: the same symbols, part for part."""
    exe = {"filename": "run.EXE", "content": base64.b64encode(b"MZ").decode(),
           "content_type": "application/octet-stream"}  # fmt: skip
    cases: list[dict[str, object]] = [
        {"text": "Hello."},
        {"text": None, "html": '<img src="https://acme.test/a.png">'},
        {"text": "  ", "html": "<p>Just HTML, long enough to be read as a real letter.</p>"},
        {"text": "go to https://TinyURL.com/x now", "html": "<a href='https://t.co/y'>y</a>"},
        {"attachments": [exe]},
        {"headers": {"List-Unsubscribe": "<mailto:u@acme.test>"}},
    ]
    for fields in cases:
        request = send_request_parse(send_body(**fields))
        raw = message_compose(request)
        content = Content(
            text=request.text or None,
            html=request.html or None,
            attachments=[a.filename for a in request.attachments],
            list_unsubscribe=any(n.lower() == "list-unsubscribe" for n, _ in request.headers),
        )
        for broadcast in (False, True):
            assert symbols_of(content, broadcast=broadcast) == builtin_symbols(
                raw, broadcast=broadcast
            ), fields


@pytest.mark.parametrize(
    "body",
    [
        {"content_filter": "quarantine"},
        {"content_threshold": 0},
        {"content_threshold": -1},
        {"content_threshold": 1e308},
        {"content_threshold": "NaN"},
        {"content_threshold": "ten"},
        {"content_filter": ["off"]},
    ],
)
def test_hostile_filter_settings_are_refused(live: ServerAccess, body: dict[str, object]) -> None:
    reply = live.account.client.patch(f"/api/servers/{live.server.pk}/", body, format="json")
    assert reply.status_code == 400, reply.content
    assert set(body) <= set(reply.json()["error"]["details"])


def test_an_unreachable_rspamd_leaves_the_builtin_checks(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "RSPAMD_URL": f"http://127.0.0.1:{free_port()}",
        "RSPAMD_TIMEOUT": 1.0,
    }
    verdict = content_check(_raw(text="hi"), sender="a@acme.test", recipients=["b@x.test"],
                            broadcast=False)  # fmt: skip
    assert (verdict.score, verdict.rspamd_action) == (0.0, "")
    assert "rspamd unavailable" in caplog.text


def test_something_that_is_not_rspamd_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RspamdUnavailable):
        rspamd_check(
            f"http://127.0.0.1:{free_port()}", b"x", sender="a@b.test", recipients=[], timeout=1
        )


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's rspamd with the private configuration `mailplane serve` writes."""
    binary = require_tool("rspamd")
    port = free_port()
    root = tmp_path_factory.mktemp("rspamd")
    log = open(root / "out.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        rspamd_command(root=root, port=port, binary=binary), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1) as reply:
                if reply.read().strip() == b"pong":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"rspamd did not start:\n{(root / 'out.log').read_text()}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_rspamd_rejects_gtube_and_passes_a_clean_message(
    rspamd: str, live: ServerAccess, settings: Any
) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "RSPAMD_URL": rspamd, "RSPAMD_TIMEOUT": 10.0}
    spam = live.client.post("/api/email/", send_body(text=f"Buy now! {GTUBE}"), format="json")
    assert spam.status_code == 422, spam.content
    error = spam.json()["error"]
    assert error["code"] == "content_rejected"
    assert any(line.startswith("GTUBE") for line in error["details"]["content"]), error
    clean = live.client.post(
        "/api/email/",
        send_body(text="Thanks for your order; it ships tomorrow.", subject="Your receipt"),
        format="json",
    )
    assert clean.status_code == 200, clean.content


@pytest.mark.timeout(150)
def test_serve_starts_rspamd_when_asked(tmp_path: Path) -> None:
    require_tool("rspamd")
    port = free_port()
    env = {"MAILPLANE_RSPAMD": "1", "MAILPLANE_RSPAMD_PORT": str(port)}
    with live_service(tmp_path, "web,rspamd", env=env):
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
                    assert r.read().strip() == b"pong"
                    break
            except OSError:
                assert time.monotonic() < deadline, "rspamd never answered"
                time.sleep(0.3)
        assert (tmp_path / "data" / "rspamd" / "local.d" / "worker-normal.inc").exists()
