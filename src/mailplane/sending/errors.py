"""The send path's own refusals, on top of core/errors.py's tree:

DomainError                                                  HTTP  SMTP       IMAP
├── NotAllowed
│   └── SenderNotVerified   `from` is no verified identity   422   550 5.7.1  NO [NOPERM]
│                           of the account
└── TooLarge
    └── MessageTooLarge     the composed message is over     413   552 5.3.4  NO [TOOBIG]
                            MESSAGE_MAX_BYTES
"""

from __future__ import annotations

from mailplane.core.errors import NotAllowed, TooLarge


class SenderNotVerified(NotAllowed):
    # 422, not 400: the request is well formed; the account lacks the identity (the
    # issue asks for it, and Postmark answers an unconfirmed signature the same way).
    # SMTP and IMAP keep NotAllowed's: RFC 3463 §3.8 X.7.1, delivery not authorized.
    code = "sender_not_verified"
    http_status = 422


class MessageTooLarge(TooLarge):
    # TooLarge's answers: 413; RFC 3463 §3.4 X.3.4 message too big for system (552).
    code = "message_too_large"
