"""aiosmtpd's protocol class with the three things Mailplane needs changed.

1. AUTH credentials are checked by an *awaitable* on the handler (`handler.authenticate`):
   aiosmtpd calls its authenticator synchronously, which would run scrypt and the ORM on
   the event loop and stall every other connection.
2. Implicit TLS (port 465, RFC 8314 §3.3) counts as TLS for `auth_require_tls`;
   aiosmtpd only recognises TLS negotiated with STARTTLS.
3. PLAIN refuses an authorization identity other than the login (RFC 4616 §2), and the
   replies carry enhanced status codes (RFC 3463).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session

log = logging.getLogger("mailplane.smtp")
_ids = itertools.count(1)


class MailplaneSession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.id = f"c{next(_ids)}"  # per-connection id for structured logs
        self.implicit_tls = False

    @property
    def client_ip(self) -> str:
        return str(self.peer[0]) if isinstance(self.peer, tuple) else str(self.peer or "")


class MailplaneSMTP(SMTP):
    session: MailplaneSession | None

    def _create_session(self) -> Session:
        return MailplaneSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_upgrade = self._original_transport is not None
        super().connection_made(transport)
        if not starttls_upgrade and transport.get_extra_info("ssl_object") is not None:
            # Implicit TLS: the whole connection is already encrypted (RFC 8314 §3.3).
            assert self.session is not None
            self.session.implicit_tls = True
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}
            self._tls_protocol = transport  # type: ignore[assignment]

    @property
    def tls_active(self) -> bool:
        return self._tls_protocol is not None

    async def _check(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        result: AuthResult = await self.event_handler.authenticate(
            self, self.session, mechanism, LoginPassword(login, password)
        )
        return result

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        # RFC 4616 §2: message = [authzid] NUL authcid NUL passwd
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        assert isinstance(blob, bytes)
        parts = blob.split(b"\x00")
        if len(parts) != 3 or not parts[1]:
            await self.push("501 5.5.2 Cannot split PLAIN response")
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid.lower() != login.lower():
            # Acting for another identity is not offered (RFC 4616 §2: may be refused).
            await self.push("535 5.7.8 Authorization identity refused")
            return AuthResult(success=False, handled=True)
        return await self._check("PLAIN", login, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(login, bytes) and isinstance(password, bytes)
        return await self._check("LOGIN", login, password)
