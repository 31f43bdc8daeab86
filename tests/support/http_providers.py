"""Local HTTP servers implementing Mailgun's and SendGrid's send endpoints.

They check what the real services check (path, auth, required fields) and answer with
their documented shapes: Mailgun 200 {"id","message"} / 400 {"message"} / 401 "Forbidden";
SendGrid 202 (empty body, X-Message-Id) / 400-401 {"errors":[{"message","field","help"}]}.
`script` queues forced statuses (e.g. 429, 500) for the next requests.

Each also plays the provider's side of its event webhook: `webhook(...)` builds, for a
request it accepted, the call the provider would make later (Mailgun: JSON signed with an
HMAC of timestamp + token; SendGrid: a batch of events signed with ECDSA P-256), echoing
the custom variables that request carried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    fields: dict[str, bytes] = field(default_factory=dict)  # Mailgun form fields
    json: Any = None  # SendGrid body
    # Custom variables sent with the message (Mailgun `v:<name>` fields, SendGrid
    # custom_args): what the provider echoes in its webhook events.
    variables: dict[str, str] = field(default_factory=dict)
    provider_id: str = ""  # the id the provider answered with (Mailgun id, X-Message-Id)
    client_port: int = 0  # which TCP connection carried it (keep-alive reuses one)

    @property
    def recipient(self) -> str:
        if self.json is not None:
            return str(self.json["personalizations"][0]["to"][0]["email"])
        return self.fields["to"].decode()


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
            # Keep-alive, as the real APIs offer: a pooled client sends over one connection.
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = Request(self.path, dict(self.headers.items()), self.rfile.read(length))
                request.client_port = self.client_address[1]
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


# Mailgun's log-level by event (others, "complained" among them, are "warn").
MAILGUN_LOG_LEVELS = {"delivered": "info", "unsubscribed": "info", "failed": "error"}


class FakeMailgun(FakeProvider):
    """POST /v3/{domain}/messages.mime (https://documentation.mailgun.com, Messages API)."""

    webhook_signing_key = "mg-webhook-signing-key-5f1e2d3c"

    def webhook(
        self,
        request: Request,
        *,
        event: str,
        severity: str = "",
        reason: str = "",
        code: int | None = None,
        message: str = "",
        enhanced: str = "",
        mx_host: str = "mx1.dest.test",
        event_id: str | None = None,
        signed_at: float | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """The JSON Mailgun POSTs to a webhook about `request`'s message (Webhook Payloads),
        signed as Mailgun signs: hex HMAC-SHA256(key, timestamp + token)."""
        timestamp = str(int(signed_at if signed_at is not None else time.time()))
        token = secrets.token_hex(25)  # "randomly generated string with length of 50"
        digest = hmac.new(
            (key or self.webhook_signing_key).encode(),
            (timestamp + token).encode(),
            hashlib.sha256,
        ).hexdigest()
        recipient = request.recipient
        data: dict[str, Any] = {
            "id": event_id or secrets.token_urlsafe(16),
            "timestamp": time.time(),
            "log-level": MAILGUN_LOG_LEVELS.get(event, "warn"),
            "event": event,
            "recipient": recipient,
            "recipient-domain": recipient.rpartition("@")[2],
            "envelope": {"targets": recipient, "transport": "smtp", "sender": "x@" + self.domain},
            "message": {"headers": {"message-id": request.provider_id.strip("<>")}},
            "flags": {"is-authenticated": True, "is-test-mode": False},
            "tags": [],
            "user-variables": dict(request.variables),
        }
        if severity:
            data["severity"] = severity
        if reason:
            data["reason"] = reason
        if code is not None:
            data["delivery-status"] = {
                "code": code,
                "message": message,
                "description": "",
                "enhanced-code": enhanced,
                "mx-host": mx_host,
                "attempt-no": 1,
                "tls": True,
                "certificate-verified": True,
            }
        return {
            "signature": {"timestamp": timestamp, "token": token, "signature": digest},
            "event-data": data,
        }

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
        request.variables = {
            name[2:]: value.decode() for name, value in request.fields.items() if name[:2] == "v:"
        }
        forced = self.forced()
        if forced:
            return _json(forced, {"message": f"forced {forced}"})
        if not request.fields.get("to"):
            return _json(400, {"message": "'to' parameter is missing"})
        if not request.fields.get("message"):
            return _json(400, {"message": "'message' parameter is missing"})
        request.provider_id = f"<{secrets.token_hex(8)}@{self.domain}>"
        return _json(200, {"id": request.provider_id, "message": "Queued. Thank you."})


class FakeSendGrid(FakeProvider):
    """POST /v3/mail/send (SendGrid v3 Mail Send)."""

    def __init__(self, *, api_key: str, domain: str = "") -> None:
        super().__init__(api_key=api_key, domain=domain)
        # The Signed Event Webhook's key pair: SendGrid keeps the private half.
        self.signing_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def verification_key(self) -> str:
        """The public key as SendGrid's settings page shows it: base64 DER."""
        der = self.signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def event(self, request: Request, event: str, **fields: Any) -> dict[str, Any]:
        """One Event Webhook event about `request`'s message; custom_args become top-level
        fields, as SendGrid adds them."""
        return {
            "email": request.recipient,
            "timestamp": int(time.time()),
            "smtp-id": f"<{request.provider_id}@ismtpd-test>",
            "event": event,
            "category": [],
            "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode(),
            "sg_message_id": f"{request.provider_id}.filter0001.16648.5515E0B88.0",
            **request.variables,
            **fields,
        }

    def webhook(
        self,
        events: list[dict[str, Any]],
        *,
        signed_at: float | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one Event Webhook POST: a JSON array of events, ECDSA
        (P-256, SHA-256) signature over timestamp + body, base64 DER in the header."""
        body = json.dumps(events).encode()
        timestamp = str(int(signed_at if signed_at is not None else time.time()))
        signature = (key or self.signing_key).sign(
            timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        return body, {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }

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
        custom_args = body.get("custom_args") or {}
        if not all(isinstance(v, str) for v in custom_args.values()):
            problems.append(("custom_args", "Custom args values must be strings."))
        if problems:
            return _json(
                400, {"errors": [{"message": m, "field": f, "help": None} for f, m in problems]}
            )
        request.variables = {str(k): str(v) for k, v in (body.get("custom_args") or {}).items()}
        request.provider_id = secrets.token_hex(11)
        return 202, {"X-Message-Id": request.provider_id}, b""


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
