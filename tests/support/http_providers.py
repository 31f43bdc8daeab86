"""Local HTTP servers implementing Mailgun's and SendGrid's send endpoints.

They check what the real services check (path, auth, required fields) and answer with
their documented shapes: Mailgun 200 {"id","message"} / 400 {"message"} / 401 "Forbidden";
SendGrid 202 (empty body, X-Message-Id) / 400-401 {"errors":[{"message","field","help"}]}.
`script` queues forced statuses (e.g. 429, 500) for the next requests.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    fields: dict[str, bytes] = field(default_factory=dict)  # Mailgun form fields
    json: Any = None  # SendGrid body


class FakeProvider:
    kind = ""

    def __init__(self, *, api_key: str, domain: str = "") -> None:
        self.api_key = api_key
        self.domain = domain
        self.requests: list[Request] = []
        self.script: list[int] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = Request(self.path, dict(self.headers.items()), self.rfile.read(length))
                fake.requests.append(request)
                status, headers, body = fake.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def answer(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def forced(self) -> int | None:
        return self.script.pop(0) if self.script else None

    def start(self) -> FakeProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(status: int, data: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(data).encode()


class FakeMailgun(FakeProvider):
    """POST /v3/{domain}/messages.mime (https://documentation.mailgun.com, Messages API)."""

    def answer(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.path != f"/v3/{self.domain}/messages.mime":
            return _json(404, {"message": "Domain not found"})
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return 401, {"Content-Type": "text/plain"}, b"Forbidden"
        head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
        form = BytesParser(policy=HTTP).parsebytes(head + request.body)
        for part in form.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            request.fields[str(name)] = part.get_payload(decode=True) or b""
        forced = self.forced()
        if forced:
            return _json(forced, {"message": f"forced {forced}"})
        if not request.fields.get("to"):
            return _json(400, {"message": "'to' parameter is missing"})
        if not request.fields.get("message"):
            return _json(400, {"message": "'message' parameter is missing"})
        msg_id = f"<{secrets.token_hex(8)}@{self.domain}>"
        return _json(200, {"id": msg_id, "message": "Queued. Thank you."})


class FakeSendGrid(FakeProvider):
    """POST /v3/mail/send (SendGrid v3 Mail Send)."""

    def answer(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.path != "/v3/mail/send":
            return _json(404, {"errors": [{"message": "not found", "field": None, "help": None}]})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _json(
                401,
                {
                    "errors": [
                        {
                            "message": "The provided authorization grant is invalid, "
                            "expired, or revoked",
                            "field": None,
                            "help": None,
                        }
                    ]
                },
            )
        try:
            request.json = json.loads(request.body)
        except ValueError:
            return _json(400, {"errors": [{"message": "Bad Request", "field": None, "help": None}]})
        forced = self.forced()
        if forced:
            return _json(forced, {"errors": [{"message": f"forced {forced}", "field": None}]})
        body = request.json
        problems = []
        if not body.get("personalizations"):
            problems.append(("personalizations", "The personalizations field is required."))
        if not (body.get("from") or {}).get("email"):
            problems.append(("from.email", "The from email is required."))
        if not body.get("content") and not body.get("template_id"):
            problems.append(
                ("content", "Unless a valid template_id is provided, content is required.")
            )
        if problems:
            return _json(
                400, {"errors": [{"message": m, "field": f, "help": None} for f, m in problems]}
            )
        return 202, {"X-Message-Id": secrets.token_hex(11)}, b""


@pytest.fixture
def fake_mailgun() -> Iterator[FakeMailgun]:
    fake = FakeMailgun(api_key="key-test-1234567890", domain="mg.acme.test")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    fake = FakeSendGrid(api_key="SG.test-1234567890")
    fake.start()
    yield fake
    fake.stop()
