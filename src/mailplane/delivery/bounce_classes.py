"""What kind of failure a remote reply is: the bounce class, and what follows from it.

A 5xx is "permanent" to RFC 5321, but receivers answer 550 for a full mailbox, a blocked
sending address, spam content or a rate limit as often as for an unknown user; suppressing
the address on every 5xx loses good recipients (the most common complaint of Postal's
users). So every failure gets a class, as SES (Permanent/Transient + subtype) and SendGrid
(Invalid Address, Mailbox Unavailable, Reputation, Content, Frequency/Volume, Technical)
classify theirs:

    hard          the address or its domain does not exist          → suppressed
    mailbox_full  over quota                                        → bounced, not suppressed
    rate_limit    the receiver wants less, later (even as a 5xx)    → retried
    block         the sending address or domain is on a block list / reputation
    spam          the content was refused as spam, phishing or malware
    policy        authentication (SPF/DKIM/DMARC), relaying, size, other local policy
    soft          a temporary failure that is none of the above (4xx, timeouts)

Only `hard` suppresses: the others say something about the sender or the moment, not the
address. The reply's text decides first (providers' own phrases and codes: Gmail's
4.7.28, Microsoft's 4.7.500-699 and S3150, Yahoo's TSS04…), then its RFC 3463 enhanced
status (x.1.x addressing, x.2.2 mailbox full, x.7.x security or policy), then the basic
code (RFC 5321 §4.2.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailplane.delivery.results import SendResult, Status
from mailplane.queue.models import BounceClass
from mailplane.servers.selectors import bounce_rules_for_messages

# (pattern over the lower-cased reply, class), first match wins. Rate limits and blocks come
# before addressing: "550 5.1.1 ... blocked" from a list service is a block, and "too many
# recipients" is not an unknown user.
_PHRASES: list[tuple[re.Pattern[str], BounceClass]] = [
    (
        re.compile(
            r"\b4\.7\.28\b|\b4\.7\.(5\d\d|6\d\d)\b|rate.?limit|too many (messages|connections|"
            r"emails|mails)|throttl|try (again )?later|temporarily (deferred|rate)|"
            r"\bts[s]?0\d\b|unusual rate|exceeded (the )?(rate|sending)|slow down|"
            r"receiving mail at a rate"
        ),
        BounceClass.RATE_LIMIT,
    ),
    (
        # Authentication and the sender's own address, before blocks: Gmail's 5.7.26 says
        # "blocked because the sender is unauthenticated", a fix on the sender's side.
        re.compile(
            r"\b5\.7\.2[5-7]\b|\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated|not authenticated|"
            r"sender (address|domain)|\b5\.1\.[78]\b"
        ),
        BounceClass.POLICY,
    ),
    (
        re.compile(
            r"block ?list|black ?list|\bdnsbl\b|\brbl\b|spamhaus|spamcop|barracuda|sorbs|"
            r"\bs3150\b|\b5\.7\.(606|6[0-4]\d|708)\b|reputation|(ip|address|domain|sender)"
            r"[^.]{0,40}\b(blocked|banned|listed)\b|\blisted (at|on|in)\b|"
            r"\bblocked (using|by|because)\b"
        ),
        BounceClass.BLOCK,
    ),
    (
        re.compile(
            r"spam|unsolicited|junk mail|phish|virus|malware|malicious|suspicious content|"
            r"content (rejected|filter)|\bbulk mail\b|message content"
        ),
        BounceClass.SPAM,
    ),
    (
        re.compile(
            r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (its|his|her|their|the) "
            r"(storage|quota)|\b[45]\.2\.2\b"
        ),
        BounceClass.MAILBOX_FULL,
    ),
    (
        re.compile(
            r"reverse dns|\bptr\b|relay(ing)? (access )?(denied|not permitted)|"
            r"message (size|too (big|large))|\b5\.3\.4\b"
        ),
        BounceClass.POLICY,
    ),
    (
        re.compile(
            r"user unknown|unknown (user|recipient|mailbox)|no such (user|recipient|mailbox|"
            r"address)|(mailbox|address|recipient|user|account)[^.]{0,30}(does not|doesn'?t) "
            r"exist|invalid (recipient|mailbox|address)|recipient (address )?rejected|"
            r"address rejected|not a valid (mailbox|recipient)|mailbox (unavailable|not found)|"
            r"account (is )?(disabled|deactivated|inactive)|host (or domain )?not found|"
            r"domain (not found|does not exist)|no mx|null mx|nxdomain"
        ),
        BounceClass.HARD,
    ),
]

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class BounceRule:
    """An override (servers.models.BounceRule): replies that contain `contains` (any case)
    and whose code or enhanced status starts with `status` ("550", "5.7", "5.7.1") get
    `bounce_class`, before the built-in table."""

    contains: str
    status: str
    bounce_class: BounceClass

    def matches(self, reply: str) -> bool:
        """`reply` lower-cased."""
        if self.contains and self.contains.lower() not in reply:
            return False
        if not self.status:
            return True
        if "." not in self.status:
            return reply.startswith(self.status)
        found = _ENHANCED.search(reply)
        if found is None:
            return False
        enhanced = found.group(0)
        return enhanced == self.status or enhanced.startswith(self.status + ".")


def _from_enhanced(klass: str, subject: str, detail: str) -> BounceClass | None:
    """RFC 3463 §3: the subject (second number) says what the failure concerns."""
    permanent = klass == "5"
    if subject == "1":  # addressing: bad mailbox, bad destination system, bad syntax
        if detail in ("7", "8"):  # the sender's own address or domain
            return BounceClass.POLICY
        return BounceClass.HARD if permanent else BounceClass.SOFT
    if subject == "2":  # the mailbox
        if detail == "2":
            return BounceClass.MAILBOX_FULL
        if detail == "1" and permanent:  # mailbox disabled, not accepting messages
            return BounceClass.HARD
        return BounceClass.SOFT if not permanent else BounceClass.POLICY
    if subject == "4" and detail == "4" and permanent:  # unable to route: no such host
        return BounceClass.HARD
    if subject == "7":  # security or policy
        return BounceClass.POLICY
    if subject in ("3", "5", "6"):  # mail system, protocol, content/media
        return BounceClass.POLICY if permanent else BounceClass.SOFT
    return None


def bounce_class(result: SendResult, rules: Sequence[BounceRule] = ()) -> BounceClass | None:
    """The class of a failed attempt; None for a delivery."""
    if result.status is Status.DELIVERED:
        return None
    reply = result.reply.lower()
    for rule in rules:
        if rule.matches(reply):
            return rule.bounce_class
    for pattern, klass in _PHRASES:
        if pattern.search(reply):
            return klass
    enhanced = _ENHANCED.search(reply)
    if enhanced:
        found = _from_enhanced(*enhanced.groups())
        if found is not None:
            return found
    if result.status is Status.TEMPORARY:
        return BounceClass.SOFT
    # RFC 5321 §4.2.3: 550/551/553 concern the mailbox or its name; 552 storage; others
    # (554 transaction failed, 5xx syntax) a refusal of this message by policy.
    code = result.code
    if code in (550, 551, 553):
        return BounceClass.HARD
    if code == 552:
        return BounceClass.MAILBOX_FULL
    return BounceClass.POLICY


def bounce_rules_of(message_ids: Iterable[int]) -> dict[int, list[BounceRule]]:
    """The override rules of each failed message's server (none for a batch of deliveries:
    no query then)."""
    wanted = set(message_ids)
    if not wanted:
        return {}
    return {
        message_id: [BounceRule(r.contains, r.status, BounceClass(r.bounce_class)) for r in rows]
        for message_id, rows in bounce_rules_for_messages(wanted).items()
    }


def suppresses(klass: BounceClass | None) -> bool:
    """Only an address that does not exist is suppressed."""
    return klass is BounceClass.HARD


def retried(result: SendResult, klass: BounceClass | None) -> bool:
    """A permanent reply that is really a rate limit is retried like a 4xx."""
    return result.status is Status.PERMANENT and klass is BounceClass.RATE_LIMIT
