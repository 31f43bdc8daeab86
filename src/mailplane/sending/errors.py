"""The send path's own refusals, on top of core/errors.py's tree:

DomainError                                                  HTTP  SMTP       IMAP
├── NotAllowed
│   ├── SenderNotVerified   `from` is no verified identity   422   550 5.7.1  NO [NOPERM]
│   │                       of the account
│   └── StreamRefused       what the message's stream does   422   550 5.7.1  NO [NOPERM]
│                           not take
├── ValidationFailed
│   └── SendAtInvalid       `send_at` is no RFC 3339 time    422   501 5.5.4  BAD
│                           within 72 hours
└── TooLarge
    └── MessageTooLarge     the composed message is over     413   552 5.3.4  NO [TOOBIG]
                            MESSAGE_MAX_BYTES
"""

from __future__ import annotations

from mailplane.core.errors import NotAllowed, TooLarge, ValidationFailed


class SenderNotVerified(NotAllowed):
    # 422, not 400: the request is well formed; the account lacks the identity (the
    # issue asks for it, and Postmark answers an unconfirmed signature the same way).
    # SMTP and IMAP keep NotAllowed's: RFC 3463 §3.8 X.7.1, delivery not authorized.
    code = "sender_not_verified"
    http_status = 422


class MessageTooLarge(TooLarge):
    # TooLarge's answers: 413; RFC 3463 §3.4 X.3.4 message too big for system (552).
    code = "message_too_large"


class SendAtInvalid(ValidationFailed):
    # 422 as SenderNotVerified: the body parses; the time it names cannot be honoured.
    # Bad input on the other protocols (501 5.5.4, BAD).
    code = "invalid_send_at"
    http_status = 422


class StreamRefused(NotAllowed):
    """A broadcast stream manages List-Unsubscribe itself (one link per recipient): the
    stream's rule forbids the message (NotAllowed's 550 5.7.1, NO [NOPERM]; 422)."""

    code = "stream_refused"
    http_status = 422
