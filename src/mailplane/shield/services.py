"""The verdict on a message before it is queued, and what its server does with it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from mailplane.core.errors import NotAllowed
from mailplane.shield.checks import Content, Symbol, content_of, symbols_of
from mailplane.shield.rspamd import RspamdUnavailable, rspamd_check

log = logging.getLogger("mailplane.shield")


class ContentRejected(NotAllowed):
    """The server's content filter refused the message; `details.content` lists why.
    NotAllowed's SMTP and IMAP answers (RFC 3463 X.7.1, delivery not authorized: policy;
    NO [NOPERM]), 422 over HTTP: the request is well formed, its content is refused."""

    code = "content_rejected"
    http_status = 422


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float
    symbols: list[Symbol] = field(default_factory=list)
    rspamd_action: str = ""  # "" when rspamd was not asked (or did not answer)

    def refuses(self, threshold: float) -> bool:
        return self.score >= threshold or self.rspamd_action == "reject"


def content_check(
    raw: bytes,
    *,
    sender: str,
    recipients: Sequence[str],
    broadcast: bool,
    content: Content | None = None,
) -> Verdict:
    """The built-in checks, plus rspamd's opinion when one is configured (a missing or
    failing rspamd is logged and the built-in checks decide alone: fail open, as Postmark's
    and most senders' filters do, rather than refuse all mail while it is down).

    `content`: what the checks read, when the caller has it without parsing `raw` (the
    send API composed the message from it: parsing it back cost a third of a batch)."""
    symbols = symbols_of(content or content_of(raw), broadcast=broadcast)
    score = sum(s.score for s in symbols)
    conf = settings.MAILPLANE
    url = str(conf.get("RSPAMD_URL") or "")
    if not url:
        return Verdict(score, symbols)
    try:
        verdict = rspamd_check(
            url,
            raw,
            sender=sender,
            recipients=recipients,
            timeout=float(conf["RSPAMD_TIMEOUT"]),
        )
    except RspamdUnavailable as exc:
        log.warning("rspamd unavailable (%s): built-in checks only", exc)
        return Verdict(score, symbols)
    scored = [s for s in verdict.symbols if s.score or verdict.action == "reject"]
    return Verdict(score + verdict.score, symbols + scored, verdict.action)


def content_refusal(verdict: Verdict) -> ContentRejected:
    listed = [f"{s.name} ({s.score:g}){': ' + s.description if s.description else ''}"
              for s in sorted(verdict.symbols, key=lambda s: -s.score)]  # fmt: skip
    return ContentRejected(
        f"the content filter refused the message (score {verdict.score:g}): "
        + ", ".join(s.name for s in verdict.symbols),
        details={"content": listed or [f"score {verdict.score:g}"]},
    )
