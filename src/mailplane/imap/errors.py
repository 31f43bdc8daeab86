"""Domain errors over IMAP: a service's refusal answers as the error renders itself.

`core/errors.py` holds the one rendering, `DomainError.imap_response(tag)`: the condition
and the response code (RFC 9051 §7.1, RFC 5530 §3), so NotAllowed is `NO [NOPERM]`,
NotFound `NO [NONEXISTENT]`, LimitReached `NO [LIMIT]`, TooLarge `NO [TOOBIG]`,
Unavailable `NO [UNAVAILABLE]` and ValidationFailed `BAD`, as the same error is a 403 or a
550 5.7.1 elsewhere. `DomainErrorResponse` carries that line as pymap's tagged command
response, so untagged responses still go first; `MailplaneConnectionState.do_command`
(server.py) answers every DomainError a command raises with it.

The IMAP layer's own refusals (a folder name it can never store, a SEARCH past its limit,
a literal too large) stay pymap `MailboxError`s in backend.py and names.py, as SMTP keeps
the protocol's own replies in its handlers.
"""

from __future__ import annotations

from pymap.parsing.response import CommandResponse

from mailplane.core.errors import DomainError

__all__ = ["DomainErrorResponse"]


class DomainErrorResponse(CommandResponse):
    """`<tag> NO [NOPERM] Mailbox is suspended`: the error's `imap_response(tag)`."""

    def __init__(self, tag: bytes, error: DomainError) -> None:
        super().__init__(tag)
        self.error = error
        self.condition = error.imap_status.condition.encode("ascii")

    @property
    def text(self) -> bytes:
        # pymap writes `tag SP text CRLF`: the rendered line without its tag and CRLF.
        line = self.error.imap_response(self.tag.decode("ascii"))
        return line[len(self.tag) + 1 : -2]

    @property
    def is_bad(self) -> bool:
        return self.error.imap_status.condition == "BAD"
