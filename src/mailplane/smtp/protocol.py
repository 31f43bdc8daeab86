"""aiosmtpd's protocol class with the four things Mailplane needs changed.

1. AUTH credentials are checked by an *awaitable* on the handler (`handler.authenticate`):
   aiosmtpd calls its authenticator synchronously, which would run scrypt and the ORM on
   the event loop and stall every other connection.
2. Implicit TLS (port 465, RFC 8314 §3.3) counts as TLS for `auth_require_tls`;
   aiosmtpd only recognises TLS negotiated with STARTTLS.
3. PLAIN refuses an authorization identity other than the login (RFC 4616 §2), and the
   replies carry enhanced status codes (RFC 3463).
4. Internationalised addresses (RFC 6531): both listeners offer SMTPUTF8, and aiosmtpd
   then takes any UTF-8 in MAIL and RCPT, with or without the SMTPUTF8 parameter. The
   check that a non-ASCII address came with it is made here, once for every handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from base64 import b64decode
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session

log = logging.getLogger("mailplane.smtp")
_ids = itertools.count(1)


def address_refusal(command: str, address: str, *, smtputf8: bool) -> str | None:
    """The reply refusing a MAIL or RCPT address for its encoding, or None if it may go on.

    The replies never echo the address: it may not even be UTF-8 (see `push`).
    """
    if address.isascii():
        return None
    if not smtputf8:
        # RFC 6531 §3.5: X.6.7 "Non-ASCII addresses not permitted for that
        # sender/recipient", with 550 after MAIL and 553 after RCPT.
        code = "550" if command == "MAIL" else "553"
        return f"{code} 5.6.7 Non-ASCII address needs MAIL FROM:<...> SMTPUTF8 (RFC 6531)"
    if any("\udc80" <= c <= "\udcff" for c in address):
        # aiosmtpd decodes arguments with surrogateescape: these stand for bytes that were
        # not UTF-8, and RFC 6531 §3.3 extends addresses with UTF-8 only.
        return "553 5.1.3 Address is not valid UTF-8"
    return None


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

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        # aiosmtpd calls this for MAIL and RCPT once their syntax and parameters are
        # checked (so envelope.smtp_utf8 is set) and pushes whatever it returns.
        if command in ("MAIL", "RCPT"):
            assert self.envelope is not None
            refusal = address_refusal(command, args[0], smtputf8=self.envelope.smtp_utf8)
            if refusal is not None:
                assert self.session is not None
                log.info("%s %s %r refused: %s", self.session.id, command, args[0], refusal)
                return refusal
        return await super()._call_handler_hook(command, *args)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's parser raises on some malformed paths ("a@": IndexError), which
        # became a 451 and a traceback; now they get its own "553 5.1.3 could not parse".
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError):
            return None, None

    async def push(self, status: AnyStr) -> None:
        # RFC 6531 §3.7.4: no non-ASCII in replies outside VRFY/EXPN with SMTPUTF8, which
        # we do not offer. A reply echoing what the client sent (an address refused for
        # policy, a VRFY argument that was not even UTF-8) is sent with "?" instead of
        # failing in aiosmtpd's strict encoder.
        if isinstance(status, str):
            await super().push(status.encode("ascii", "replace"))
        else:
            await super().push(status)

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
