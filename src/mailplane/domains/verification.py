"""Judging DNS answers against the records a customer was asked to publish.

Pure functions: each takes a `Lookup` (what the DNS said) and what we expect, and returns a
`Check` (status + a sentence saying what was found). No I/O here, so each rule is tested
directly; `services.domain_verify` does the lookups and the writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mailplane.dns import Lookup, MxRecord, Outcome
from mailplane.domains.models import RecordStatus


@dataclass(frozen=True, slots=True)
class Check:
    status: RecordStatus
    detail: str


# Top-level names no public DNS will ever serve: RFC 2606 §2 (.test, .example, .invalid,
# .localhost), made special-use by RFC 6761 §6.2-6.5.
RESERVED_TLDS = {
    "test": "RFC 6761 §6.2",
    "localhost": "RFC 6761 §6.3",
    "invalid": "RFC 6761 §6.4",
    "example": "RFC 2606 §2",
}


def reserved_tld(name: str) -> str | None:
    """The reserved top-level name `name` is under (`test`, …), or None for a real domain."""
    tld = name.rstrip(".").rsplit(".", 1)[-1].lower()
    return tld if tld in RESERVED_TLDS else None


def reserved_acceptance(name: str) -> str:
    """What the API and the records say about a reserved name accepted without DNS."""
    tld = reserved_tld(name)
    assert tld is not None
    return (
        f"accepted as verified without DNS lookups: .{tld} is reserved ({RESERVED_TLDS[tld]}) "
        "and no public DNS serves it; embedded mode accepts such names so that a first run "
        "needs no DNS (production mode checks every domain; "
        "MAILPLANE_ACCEPT_RESERVED_DOMAINS=0 turns this off)"
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str) -> str:
    return f'"{_short(text)}"'


def _unanswered(lookup: Lookup[Any], what: str) -> Check | None:
    """The common cases before any record is judged: lookup failed, or nothing there."""
    if lookup.outcome is Outcome.ERROR:
        return Check(
            RecordStatus.ERROR,
            f"could not look up {lookup.rdtype} {lookup.name}: {lookup.reason}; "
            "will check again later",
        )
    if lookup.outcome is Outcome.MISSING:
        return Check(RecordStatus.MISSING, f"no {what} found: {lookup.reason}")
    return None


def mx_evaluate(lookup: Lookup[MxRecord], *, expected_host: str) -> Check:
    """OK when our MX host is among the domain's MX records (RFC 5321 §5.1)."""
    if (early := _unanswered(lookup, "MX record")) is not None:
        return early
    expected = expected_host.rstrip(".").lower()
    listed = ", ".join(str(mx) for mx in lookup.records)
    ours = [mx for mx in lookup.records if mx.host == expected]
    if not ours:
        return Check(
            RecordStatus.INVALID, f"MX records found ({listed}) but none points at {expected}"
        )
    first = lookup.records[0]
    if first.preference < ours[0].preference:
        return Check(
            RecordStatus.OK,
            f"MX {ours[0]} found; note that {first.host} is preferred over it ({listed})",
        )
    return Check(
        RecordStatus.OK, f"MX {ours[0]} found" + (f" ({listed})" if len(lookup.records) > 1 else "")
    )


def _is_spf(text: str) -> bool:
    # RFC 7208 §4.5: the version section is exactly "v=spf1", ended by a space or the
    # record's end; the ABNF literal is case-insensitive (RFC 5234 §2.3).
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def spf_evaluate(lookup: Lookup[str], *, include_host: str) -> Check:
    """Exactly one SPF record, including our sending hosts before any `all`."""
    if (early := _unanswered(lookup, "SPF record (TXT v=spf1)")) is not None:
        return early
    records = [text for text in lookup.records if _is_spf(text)]
    if not records:
        found = "; ".join(_quote(t) for t in lookup.records)
        return Check(
            RecordStatus.MISSING,
            f"TXT records at {lookup.name} ({found}) but none is an SPF record (v=spf1)",
        )
    if len(records) > 1:
        found = "; ".join(_quote(t) for t in records)
        return Check(
            RecordStatus.INVALID,
            f"{len(records)} SPF records at {lookup.name} ({found}); RFC 7208 §4.5 allows "
            "exactly one (receivers treat more as a permanent error): merge them into one",
        )
    record = records[0]
    wanted = f"include:{include_host.rstrip('.').lower()}"
    for term in record.split()[1:]:
        mechanism = term.lower().lstrip("+")
        if mechanism.rstrip(".") == wanted:
            return Check(RecordStatus.OK, f"SPF record {_quote(record)} found")
        # RFC 7208 §5.1: mechanisms after "all" are never evaluated.
        if re.fullmatch(r"[-~?]?all", mechanism):
            break
    return Check(
        RecordStatus.INVALID,
        f"SPF record {_quote(record)} found but it does not include {wanted} (before any `all`)",
    )


def _tags(text: str) -> dict[str, str] | None:
    """A DKIM/DMARC tag-list (RFC 6376 §3.2); None if a tag repeats (the list is invalid)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()  # tag names are case-sensitive (RFC 6376 §3.2)
        if name in tags:
            return None
        tags[name] = value.strip()
    return tags


def dkim_evaluate(lookup: Lookup[str], *, public_key: str) -> Check:
    """One DKIM key record whose p= is this domain's public key (RFC 6376 §3.6.1)."""
    if (early := _unanswered(lookup, "DKIM key record (TXT)")) is not None:
        return early
    if len(lookup.records) > 1:
        return Check(
            RecordStatus.INVALID,
            f"{len(lookup.records)} TXT records at {lookup.name}; verifiers may pick any of "
            "them (RFC 6376 §3.6.2.2): keep only the DKIM record shown",
        )
    record = lookup.records[0]
    tags = _tags(record)
    if tags is None:
        return Check(
            RecordStatus.INVALID,
            f"DKIM record {_quote(record)} repeats a tag (invalid, RFC 6376 §3.2)",
        )
    if "v" in tags and tags["v"] != "DKIM1":
        return Check(RecordStatus.INVALID, f"DKIM record has v={tags['v']}; expected v=DKIM1")
    if tags.get("k", "rsa").lower() != "rsa":
        return Check(RecordStatus.INVALID, f"DKIM record has k={tags['k']}; expected k=rsa")
    if "p" not in tags:
        return Check(RecordStatus.INVALID, f"TXT record {_quote(record)} has no p= tag")
    # Base64 in p= may carry folding whitespace (RFC 6376 §3.6.1).
    found = re.sub(r"\s+", "", tags["p"])
    if not found:
        return Check(RecordStatus.INVALID, "DKIM record has an empty p=: the key is revoked")
    if found != public_key:
        return Check(
            RecordStatus.INVALID,
            f"DKIM record found but its key (p={_short(found, 24)}) is not this domain's "
            f"key (p={_short(public_key, 24)}): publish the value shown",
        )
    return Check(RecordStatus.OK, "DKIM record with this domain's public key found")


_DMARC = re.compile(r"[vV]\s*=\s*DMARC1\s*(;|$)")  # RFC 7489 §6.4: "v" first, DMARC1 exact


def dmarc_evaluate(lookup: Lookup[str]) -> Check:
    """One DMARC record with a policy; which policy is the customer's choice."""
    if (early := _unanswered(lookup, "DMARC record (TXT v=DMARC1)")) is not None:
        return early
    records = [text for text in lookup.records if _DMARC.match(text)]
    if not records:
        found = "; ".join(_quote(t) for t in lookup.records)
        return Check(
            RecordStatus.MISSING,
            f"TXT records at {lookup.name} ({found}) but none starts with v=DMARC1",
        )
    if len(records) > 1:
        return Check(
            RecordStatus.INVALID,
            f"{len(records)} DMARC records at {lookup.name}; with more than one, receivers "
            "apply no DMARC policy at all (RFC 7489 §6.6.3): keep one",
        )
    tags = _tags(records[0]) or {}
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check(
            RecordStatus.INVALID,
            f"DMARC record {_quote(records[0])} has no valid p= policy "
            "(none, quarantine or reject; RFC 7489 §6.3)",
        )
    return Check(RecordStatus.OK, f"DMARC record found (p={policy})")


def return_path_evaluate(lookup: Lookup[str], *, expected_target: str) -> Check:
    """The bounce host is a CNAME to our return-path host."""
    if (early := _unanswered(lookup, "CNAME record")) is not None:
        return early
    expected = expected_target.rstrip(".").lower()
    target = lookup.records[0]
    if target != expected:
        return Check(
            RecordStatus.INVALID,
            f"{lookup.name} is a CNAME to {target}; expected {expected}",
        )
    return Check(RecordStatus.OK, f"CNAME to {target} found")
