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
5. Hostile input (issue 8) is refused here, for submission and MX alike:
   - a bare LF anywhere (command, AUTH exchange, message text) ends the session with
     "521 5.5.2 Error: bare <LF> received", as Postfix's smtpd_forbid_bare_newline = yes
     did from 3.8.4 (www.postfix.org/smtp-smuggling.html): aiosmtpd splits commands on LF,
     so "MAIL FROM:<a@x>\nRCPT TO:<b@y>" ran as two commands, and a message with
     "\n.\n" in it is what SMTP smuggling (CVE-2023-51764 class) needs another hop to
     misread. RFC 5321 §2.3.8: lines end in CRLF; RFC 5322 §2.3: no bare CR or LF;
   - NUL in a command line (500 5.5.2) or in message text (554 5.6.0; RFC 5322 §3.5 text
     and RFC 2045 §2.8 exclude it);
   - a bare CR in a command line (500 5.5.2) or in message text (554 5.6.0; RFC 5322 §2.3):
     the next hop's client library turns it into a line end (aiosmtplib and smtplib both
     do), so the message would arrive other than it was signed (DKIM fails) and parsed
     into other lines than the ones checked here;
   - STARTTLS once only (RFC 3207 §4.2), never after AUTH;
   - a failed TLS handshake is logged in one line, not as a traceback;
   - after 20 error replies the session ends with 421 4.7.0 (Postfix's
     smtpd_hard_error_limit);
   - every 2xx/4xx/5xx reply carries an enhanced status code (RFC 3463; RFC 2034 §3
     exempts only the greeting and the replies to EHLO/HELO), added here to aiosmtpd's
     own replies that lack one.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
from base64 import b64decode
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session, TLSSetupException

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


HARD_ERROR_LIMIT = 20  # Postfix's smtpd_hard_error_limit default
RECIPIENT_OVERSHOOT_LIMIT = 1000  # Postfix's smtpd_recipient_overshoot_limit default

BARE_LF_REPLY = b"521 5.5.2 Error: bare <LF> received"

_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
_REPLY = re.compile(r"(\d{3})([ -])(.*)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE_CR = re.compile(rb"\r(?!\n)")
# RFC 5321 §4.1.2 Path with Dot-string local part and a Domain of LDH labels: what
# get_angle_addr returns unchanged (its addr_spec is the text between the brackets).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(rf"[ \t]*<(({_ATOM}(?:\.{_ATOM})*)@{_LABEL}(?:\.{_LABEL})*)>(?=[ \t]|$)")

# Enhanced codes for aiosmtpd's own replies that have none (RFC 3463 classes: X.5.1
# invalid command, X.5.2 syntax error, X.5.4 invalid arguments, X.3.4 too big, X.7.0
# security). Keyed by reply code and a prefix of aiosmtpd's text; else by code alone.
_ENHANCED_BY_TEXT: list[tuple[str, str, str]] = [
    ("500", "Error: command", "5.5.1"),  # '... "X" not recognized'
    ("500", "Command line too long", "5.5.2"),  # RFC 5321 §4.5.3.1.4: 512 octets
    ("500", "Line too long", "5.5.2"),  # a DATA line over 1000 octets (§4.5.3.1.6)
    ("502", "Could not VRFY", "5.5.4"),
]
_ENHANCED_BY_CODE = {
    "220": "2.0.0",  # "Ready to start TLS" (the greeting is exempt)
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.0.0",
    "421": "4.7.0",
    "454": "4.7.0",  # RFC 3207 §4: TLS not available
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
    "555": "5.5.4",
}


# RFC 3463 §3.2: X.1.0 for a sender, X.1.5 for a valid destination (aiosmtpd: "250 OK").
_ENHANCED_BY_COMMAND = {("MAIL", "250"): "2.1.0", ("RCPT", "250"): "2.1.5"}


def with_enhanced_code(reply: str, command: str = "") -> str:
    """`reply` (to `command`) with an RFC 3463 enhanced status code if it is a 2xx/4xx/5xx
    without one."""
    match = _REPLY.fullmatch(reply)
    if match is None or reply[0] not in "245":
        return reply
    code, sep, text = match.groups()
    if _ENHANCED.match(text):
        return reply
    enhanced = (
        next(
            (e for c, prefix, e in _ENHANCED_BY_TEXT if c == code and text.startswith(prefix)),
            None,
        )
        or _ENHANCED_BY_COMMAND.get((command, code))
        or _ENHANCED_BY_CODE.get(code, f"{code[0]}.0.0")
    )
    return f"{code}{sep}{enhanced} {text}"


def bare_lf_in(data: bytes, *, after_cr: bool) -> bool:
    """True if `data` has an LF not preceded by CR (`after_cr`: the byte before `data`)."""
    lf = data.count(b"\n")
    if not lf:
        return False
    paired = data.count(b"\r\n") + (1 if after_cr and data.startswith(b"\n") else 0)
    return lf > paired


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after_cr = False  # the last byte received was CR (bare LF across reads)
        self._hanging_up = False
        self._errors = 0
        self._overshoot = 0  # 452 4.5.3 replies not counted as errors so far
        # RFC 2034 §3: no enhanced codes in the greeting and the replies to EHLO/HELO.
        self._greeted = False
        self._in_helo = False
        # Every command handler first refuses NUL in its argument (aiosmtpd would pass it
        # on: into addresses, and echoed back in VRFY replies).
        self._smtp_methods = {
            name: self._refusing_nul(name, method) for name, method in self._smtp_methods.items()
        }
        self._command = ""  # the command being answered (for its enhanced codes)

    def _refusing_nul(
        self, name: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def guarded(arg: str | None) -> None:
            self._command = name
            if arg is not None and "\x00" in arg:
                await self.push("500 5.5.2 Error: NUL character in command")
                return
            if arg is not None and "\r" in arg:
                await self.push("500 5.5.2 Error: bare <CR> in command")
                return
            await method(arg)

        # Keeps aiosmtpd's @syntax attributes, which HELP and EHLO read.
        return functools.update_wrapper(guarded, getattr(method, "__func__", method))

    def _create_session(self) -> Session:
        return MailplaneSession(self.loop)

    def data_received(self, data: bytes) -> None:
        # Before aiosmtpd's reader splits anything on LF: one bare LF and the session ends,
        # whatever state it is in (see the module docstring, point 5).
        if self._hanging_up:
            return
        if bare_lf_in(data, after_cr=self._after_cr):
            session_id = self.session.id if isinstance(self.session, MailplaneSession) else "-"
            log.info("%s bare LF received; disconnecting (521 5.5.2)", session_id)
            self._hang_up(BARE_LF_REPLY)
            return
        self._after_cr = data.endswith(b"\r")
        super().data_received(data)

    def _hang_up(self, reply: bytes) -> None:
        """Send `reply` and close; nothing more is read or answered on this connection."""
        self._hanging_up = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_upgrade = self._original_transport is not None
        self._after_cr = False  # RFC 3207 §4.2: nothing from before TLS carries over
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

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_active:
            # RFC 3207 §4.2: no second TLS session (and none on implicit TLS); Postfix's
            # reply. AUTH needs TLS here, so this also covers STARTTLS after AUTH.
            await self.push("554 5.5.1 Error: TLS already active")
            return
        assert self.session is not None
        if self.session.authenticated:
            await self.push("503 5.5.1 Error: STARTTLS after AUTH")
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client that cannot (or will not) finish the handshake: common, and not a
            # fault of ours. aiosmtpd closes the connection without a reply.
            assert self.session is not None
            session_id = getattr(self.session, "id", "-")
            log.info("%s STARTTLS handshake failed: %r", session_id, error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        status: str = await super().handle_exception(error)
        return status

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> Any:
        try:
            return await super().challenge_auth(challenge, encode_to_b64, log_client_response)
        except ValueError as exc:  # StreamReader.readline: longer than the reader's limit
            if "not found" in str(exc):  # the rest of the line is still to come: drop it
                await self._discard_line()
            # RFC 4954 §4: 500 5.5.6 Authentication Exchange line is too long.
            await self.push("500 5.5.6 Authentication exchange line is too long")
            return MISSING

    async def _discard_line(self) -> None:
        while True:
            try:
                await self._reader.readuntil()
                return
            except asyncio.LimitOverrunError as exc:
                await self._reader.read(exc.consumed)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command == "DATA":
            assert self.envelope is not None
            if b"\x00" in (self.envelope.original_content or b""):
                assert self.session is not None
                log.info("%s message refused: NUL in its text", self.session.id)
                return "554 5.6.0 Message text contains NUL (RFC 5322 section 3.5)"
            if _BARE_CR.search(self.envelope.original_content or b""):
                assert self.session is not None
                log.info("%s message refused: bare CR in its text", self.session.id)
                return "554 5.6.0 Message text contains a bare <CR> (RFC 5322 section 2.3)"
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
        # The common path, "<dot-atom@dot-atom> params", without aiosmtpd's parser (the
        # email package's RFC 5322 tokenizer, and a class defined per call): a third of
        # the CPU of MAIL and RCPT (py-spy, issue 15). Anything else (quoted local parts,
        # address literals, source routes, UTF-8, bad syntax) still goes the long way.
        match = _SIMPLE_PATH.match(arg)
        if match is not None and len(match.group(2)) <= (self.local_part_limit or 1 << 30):
            rest = arg[match.end() :].lstrip(" \t")  # the CFWS get_angle_addr consumes
            if not rest.startswith("("):  # a comment: the long way
                return match.group(1), rest
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
        # failing in aiosmtpd's strict encoder, and control characters the same way.
        if self._hanging_up:
            return
        if self.transport is None or self.transport.is_closing():
            # The connection is gone (idle timeout, client reset) while a command was still
            # being answered: asyncio dropped such writes, uvloop raises RuntimeError.
            return
        reply = status if isinstance(status, str) else status.decode("ascii", "replace")
        reply = _CONTROL.sub("?", reply)
        if self._greeted and not self._in_helo:
            reply = with_enhanced_code(reply, self._command)
        self._greeted = True
        await super().push(reply.encode("ascii", "replace"))
        if reply[:1] in ("4", "5") and not reply.startswith("421"):
            if reply.startswith("452 4.5.3") and self._overshoot < RECIPIENT_OVERSHOOT_LIMIT:
                # RFC 5321 §4.5.3.1.10: too many recipients is no error; the client sends
                # the rest in another transaction (Postfix: smtpd_recipient_overshoot_limit).
                self._overshoot += 1
                return
            self._errors += 1
            if self._errors >= HARD_ERROR_LIMIT:
                assert self.session is not None
                log.info("%s too many errors; disconnecting", getattr(self.session, "id", "-"))
                self._hang_up(b"421 4.7.0 Error: too many errors")

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
