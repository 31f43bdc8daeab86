"""One-click unsubscribe for broadcast streams (RFC 8058, RFC 2369).

Every broadcast message carries its own token in its List-Unsubscribe link: 128 random
bits (base32, lower case: a URL path segment and, should a mailto route take it, a local
part that survives case folding), of which only a digest is kept, on the message's
ServerMessage row. So the token is unguessable and opaque (RFC 8058 §3.1: no address in
plain text), and it is bound to one server, one stream and one recipient: a broadcast
message has exactly one (sending/services.py refuses more, so that one recipient's link
never unsubscribes another).

The mailto URI (RFC 2369 §3.2) carries the same token in its local part: mail to it,
received by the MX at the domain's return path host, unsubscribes the same way.

Following the link suppresses the address for that stream only (its transactional mail
still goes) and appends an `unsubscribed` event, both through queue/transitions.py. A
replay changes nothing and answers as the first time (idempotent), as mailbox providers
may POST more than once.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from django.conf import settings

from mailplane.core import crypto
from mailplane.core.errors import NotFound
from mailplane.message.unsubscribe import ListUnsubscribe
from mailplane.queue.transitions import unsubscribe_record
from mailplane.servers.models import ServerMessage

_TOKEN = re.compile(r"[a-z2-7]{26}")  # 16 bytes in unpadded base32
MAILTO_LOCAL = "unsubscribe"  # unsubscribe+<token>@<return path host>: 38 characters


def mailto_token(address: str) -> str | None:
    """The token of an `unsubscribe+<token>@…` address (any case), or None."""
    local = address.rpartition("@")[0].lower()
    prefix, plus, token = local.partition("+")
    return token if plus and prefix == MAILTO_LOCAL and _TOKEN.fullmatch(token) else None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # goes into the message, never stored
    digest: str  # stored on the message's ServerMessage

    def header(self, *, return_path_host: str) -> ListUnsubscribe:
        """The HTTPS URI (one-click) and a mailto URI at the sender domain's return path
        host, whose MX is ours already for bounces (smtp/mx.py takes the mail)."""
        return ListUnsubscribe(
            url=f"{settings.MAILPLANE['PUBLIC_URL']}/unsubscribe/{self.token}/",
            mailto=f"{MAILTO_LOCAL}+{self.token}@{return_path_host}",
        )


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    stream_name: str
    first: bool  # False: the address was already unsubscribed from this stream


def unsubscribe_token_issue() -> IssuedToken:
    token = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return IssuedToken(token=token, digest=crypto.digest(token))


def _link_get(token: str) -> ServerMessage:
    """The message a token belongs to; anything else (malformed, unknown) is NotFound,
    with the same answer, so a probe learns nothing."""
    link = None
    if _TOKEN.fullmatch(token):
        link = (
            ServerMessage.objects.select_related("stream", "message")
            .filter(unsubscribe_digest=crypto.digest(token))
            .first()
        )
    if link is None:
        raise NotFound("unsubscribe link not found (it may have expired)")
    return link


def unsubscribe_check(*, token: str) -> str:
    """The stream's name for the confirmation page (GET): reads, changes nothing."""
    return _link_get(token).stream.name


def unsubscribe_apply(*, token: str, how: str) -> Unsubscribed:
    """Suppress the token's recipient for the token's stream (idempotent)."""
    link = _link_get(token)
    row = link.message.recipients.order_by("pk").first()
    if row is None:  # not written without one: a message has at least one recipient
        raise NotFound("unsubscribe link not found (it may have expired)")
    row.message = link.message
    first = unsubscribe_record(
        organization_id=link.message.organization_id,
        address=row.rcpt_to,
        stream_id=link.stream_id,
        row=row,
        detail=f"{how} unsubscribe from stream {link.stream.stream_id}",
    )
    return Unsubscribed(stream_name=link.stream.name, first=first)
