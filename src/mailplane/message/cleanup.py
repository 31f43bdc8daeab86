"""The cleanup stage: what Mailplane adds to a message before it is queued, whichever way
it came in (SMTP submission, the send API).

Fields are prepended as bytes (headers.prepend): the client's fields and body stay
byte-for-byte as sent, so a signature the client made still verifies.
"""

from __future__ import annotations

from mailplane.message.headers import (
    address_domain,
    headers_of,
    new_message_id,
    prepend,
    rfc5322_date,
)
from mailplane.message.unsubscribe import ListUnsubscribe


def message_cleanup(
    raw: bytes,
    *,
    sender: str,
    received: str,
    reply_to: str = "",
    list_unsubscribe: ListUnsubscribe | None = None,
) -> bytes:
    """`raw` completed for the queue.

    sender:   the submitting mailbox's address (its domain names new Message-IDs).
    received: the trace clause, e.g. "by mx.example with ESMTPSA"; the date is added here.
    reply_to: the mailbox's Reply-To, added only if the message has none.
    list_unsubscribe: a bulk message's unsubscribe fields (RFC 2369, RFC 8058), replacing
              none of the message's own (the caller refuses those on bulk streams).
    """
    headers = headers_of(raw)
    # RFC 5321 §4.4: the trace field goes on top of the message.
    added: list[tuple[str, str]] = [("Received", f"{received}; {rfc5322_date()}")]
    if reply_to and "Reply-To" not in headers:
        added.append(("Reply-To", reply_to))
    # RFC 6409 §8.2 / §8.3: an MSA may add the Date and Message-ID a client left out
    # (RFC 5322 §3.6 requires the first and says every message should have the second).
    if "Date" not in headers:
        added.append(("Date", rfc5322_date()))
    if "Message-ID" not in headers:
        added.append(("Message-ID", new_message_id(address_domain(sender))))
    if list_unsubscribe is not None:
        # Before DKIM, which signs the queued bytes at delivery (RFC 8058 §4).
        added.extend(list_unsubscribe.fields())
    return prepend(raw, added)
