"""The send path's own refusals, on top of core/errors.py's tree:

DomainError
├── SenderNotVerified   `from` is no verified identity of the account   (HTTP 422)
├── MessageTooLarge     the composed message is over MESSAGE_MAX_BYTES   (HTTP 413)
├── SendAtInvalid       `send_at` is no RFC 3339 time within 72 hours    (HTTP 422)
└── StreamRefused       what the message's stream does not take          (HTTP 422)
"""

from __future__ import annotations

from mailplane.core.errors import DomainError


class SenderNotVerified(DomainError):
    # 422, not 400: the request is well formed; the account lacks the identity (the
    # issue asks for it, and Postmark answers an unconfirmed signature the same way).
    code = "sender_not_verified"
    http_status = 422


class MessageTooLarge(DomainError):
    code = "message_too_large"
    http_status = 413


class SendAtInvalid(DomainError):
    # 422 as SenderNotVerified: the body parses; the time it names cannot be honoured.
    code = "invalid_send_at"
    http_status = 422


class StreamRefused(DomainError):
    """A broadcast stream manages List-Unsubscribe itself (one link per recipient)."""

    code = "stream_refused"
    http_status = 422
