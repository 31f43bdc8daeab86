"""Building the RFC 5322 message of a send request (then completed by message.cleanup).

The `email` package writes it under the SMTP policy: CRLF line ends, lines folded under
78 characters (RFC 5322 §2.1.1), non-ASCII display names and subjects as RFC 2047
encoded words, bodies in 7bit, quoted-printable or base64 as their content needs, so the
message passes any relay without 8BITMIME. Bcc is never written (RFC 5322 §3.6.3 allows
either; writing it would show every blind recipient to the others).
"""

from __future__ import annotations

import email.errors
import re
from email.message import EmailMessage
from email.policy import SMTP

from mailplane.core.errors import ValidationFailed
from mailplane.sending.requests import SendRequest


def _cte(text: str) -> str | None:
    """None (the email package picks 7bit, or quoted-printable for long lines) for ASCII;
    quoted-printable otherwise, where it would write 8bit, which needs 8BITMIME at every
    hop (RFC 6152)."""
    return None if text.isascii() else "quoted-printable"


_LINE_MAX = SMTP.max_line_length or 78  # what the SMTP policy folds at
_PRINTABLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def _header_set(message: EmailMessage, name: str, value: str) -> None:
    """`message[name] = value`, without the header registry's parse when it changes nothing.

    The registry parses every value it is given (the address lists with the full RFC 5322
    grammar): about two thirds of composing a short message (bench/send_api.py, py-spy).
    A short printable-ASCII value (no encoded word, no outer space) is written as given:
    the SMTP policy folds only lines over 78 characters and encodes only non-ASCII
    (email.policy.EmailPolicy `_fold`), so `set_raw` yields the same bytes
    (tests/sending/test_compose.py). Anything else takes the registry's path.
    """
    fits = len(name) + 2 + len(value) <= _LINE_MAX
    if fits and _PRINTABLE.fullmatch(value) and "=?" not in value:
        message.set_raw(name, value)
    else:
        message[name] = value


def message_compose(request: SendRequest) -> bytes:
    message = EmailMessage(policy=SMTP)
    try:
        _header_set(message, "From", request.sender.formatted())
        _header_set(message, "To", ", ".join(box.formatted() for box in request.to))
        if request.cc:
            _header_set(message, "Cc", ", ".join(box.formatted() for box in request.cc))
        if request.reply_to:
            _header_set(message, "Reply-To", ", ".join(box.formatted() for box in request.reply_to))
        _header_set(message, "Subject", request.subject)
        for name, value in request.headers:
            _header_set(message, name, value)
        # multipart/alternative when both: the last part is the preferred one (RFC 2046
        # §5.1.4), so the HTML comes after the text.
        if request.text:
            message.set_content(request.text, cte=_cte(request.text))
            if request.html:
                message.add_alternative(request.html, subtype="html", cte=_cte(request.html))
        else:
            message.set_content(request.html, subtype="html", cte=_cte(request.html))
        # The body becomes the first part of a multipart/mixed (RFC 2046 §5.1.3), each
        # file a base64 part with its name in Content-Disposition (RFC 2183; a non-ASCII
        # name encoded as RFC 2231 parameters).
        for attachment in request.attachments:
            message.add_attachment(
                attachment.data,
                maintype=attachment.maintype,
                subtype=attachment.subtype,
                filename=attachment.filename,
            )
        return message.as_bytes(policy=SMTP)
    except (ValueError, TypeError, IndexError, email.errors.MessageError) as exc:
        # The request was checked field by field; what the email package still refuses
        # is a header value it cannot fold or encode.
        raise ValidationFailed.on("headers", f"the message cannot be written: {exc}") from exc
