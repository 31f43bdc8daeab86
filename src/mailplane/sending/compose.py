"""Building the RFC 5322 message of a send request (then completed by message.cleanup).

The `email` package writes it under the SMTP policy: CRLF line ends, lines folded under
78 characters (RFC 5322 §2.1.1), non-ASCII display names and subjects as RFC 2047
encoded words, bodies in 7bit, quoted-printable or base64 as their content needs, so the
message passes any relay without 8BITMIME. Bcc is never written (RFC 5322 §3.6.3 allows
either; writing it would show every blind recipient to the others).
"""

from __future__ import annotations

import email.errors
from email.message import EmailMessage
from email.policy import SMTP

from mailplane.core.errors import ValidationFailed
from mailplane.sending.requests import SendRequest


def _cte(text: str) -> str | None:
    """None (the email package picks 7bit, or quoted-printable for long lines) for ASCII;
    quoted-printable otherwise, where it would write 8bit, which needs 8BITMIME at every
    hop (RFC 6152)."""
    return None if text.isascii() else "quoted-printable"


def message_compose(request: SendRequest) -> bytes:
    message = EmailMessage(policy=SMTP)
    try:
        message["From"] = request.sender.formatted()
        message["To"] = ", ".join(box.formatted() for box in request.to)
        if request.cc:
            message["Cc"] = ", ".join(box.formatted() for box in request.cc)
        if request.reply_to:
            message["Reply-To"] = ", ".join(box.formatted() for box in request.reply_to)
        message["Subject"] = request.subject
        for name, value in request.headers:
            message[name] = value
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
