"""The list-unsubscribe fields of a bulk message: RFC 2369 `List-Unsubscribe` (an HTTPS
URI and, optionally, a mailto URI, each in angle brackets) and RFC 8058's
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`, which tells the mailbox provider it
may unsubscribe with one POST to the HTTPS URI, without the recipient visiting a page.

RFC 8058 §3.1: the HTTPS URI must identify the list and the recipient by itself, through
an opaque, hard-to-forge token (not an address in plain text); §4: both fields must be
covered by the message's DKIM signature (delivery/signing.py SIGNED_IF_PRESENT).
"""

from __future__ import annotations

from dataclasses import dataclass

ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1: the one value of the field


@dataclass(frozen=True, slots=True)
class ListUnsubscribe:
    url: str  # https://…/unsubscribe/<token>/
    mailto: str = ""  # an address whose mail unsubscribes (RFC 2369 §3.2), or ""

    def fields(self) -> list[tuple[str, str]]:
        uris = [f"<{self.url}>"]
        if self.mailto:
            uris.append(f"<mailto:{self.mailto}>")
        # RFC 2369 §2: a comma-separated list; folded between the URIs (CRLF SP) so that
        # the line stays under RFC 5322's 78 characters (§2.1.1) with a long token.
        return [
            ("List-Unsubscribe", ",\r\n ".join(uris)),
            ("List-Unsubscribe-Post", ONE_CLICK),
        ]
