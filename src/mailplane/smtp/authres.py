"""SPF, DKIM and DMARC for inbound mail, summarised as an RFC 8601 Authentication-Results.

Blocking (DNS): run `message_authenticate` in the worker pool. Each check degrades to its
"temperror"/"permerror" result rather than raising: the MX records what it could verify.

Limitation: the DMARC organizational domain is approximated by the last two labels;
RFC 7489 §3.2 wants the Public Suffix List (co.uk etc.), which is not bundled yet.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import dkim
import spf

from mailplane.dns import domain_ascii
from mailplane.message.headers import address_domain, from_addresses, headers_of
from mailplane.smtp import dnsquery

log = logging.getLogger("mailplane.smtp.authres")


@dataclass(slots=True)
class DkimResult:
    result: str  # pass, fail, neutral, temperror, permerror (RFC 8601 §2.7.1)
    domain: str = ""
    selector: str = ""


@dataclass(slots=True)
class AuthOutcome:
    spf: str = "none"
    spf_domain: str = ""
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: str = "none"
    dmarc_policy: str = ""  # none, quarantine, reject (what the From domain asks for)
    from_domain: str = ""

    def header_value(self, authserv_id: str) -> str:
        parts = [authserv_id]
        parts.append(f"spf={self.spf} smtp.mailfrom={self.spf_domain or 'unknown'}")
        if not self.dkim:
            parts.append("dkim=none")
        for d in self.dkim:
            domain, selector = d.domain or "unknown", d.selector or "unknown"
            parts.append(f"dkim={d.result} header.d={domain} header.s={selector}")
        dmarc = f"dmarc={self.dmarc}"
        if self.dmarc_policy:
            dmarc += f" (p={self.dmarc_policy})"
        parts.append(f"{dmarc} header.from={self.from_domain or 'unknown'}")
        return ";\r\n\t".join(parts)


def _ascii_domain(domain: str) -> str | None:
    """`domain` as the DNS has it (A-labels), or None if it has no such form. RFC 8616:
    SPF, DKIM and DMARC work on A-labels, so an SMTPUTF8 sender's U-labels are converted
    before any lookup or comparison (a DKIM d= is always A-labels)."""
    try:
        return domain_ascii(domain.lower())
    except UnicodeError:
        return None


def spf_check(*, ip: str, mail_from: str, helo: str) -> tuple[str, str]:
    """(result, domain checked). RFC 7208 §2.4: a null sender is checked as postmaster@HELO."""
    sender = mail_from if mail_from and mail_from != "<>" else f"postmaster@{helo}"
    local, at, domain = sender.rpartition("@")
    if at and not domain.isascii():
        ascii_domain = _ascii_domain(domain)
        if ascii_domain is None:
            return "none", domain  # RFC 7208 §4.3: a malformed domain yields "none"
        sender = f"{local}@{ascii_domain}"
    try:
        result, _explanation = spf.check2(i=ip, s=sender, h=helo, querytime=20)
    except Exception:  # the library's own errors map to results; anything else is ours
        log.exception("SPF evaluation crashed for %s", sender)
        result = "temperror"
    return str(result), address_domain(sender)


def dkim_check(raw: bytes) -> list[DkimResult]:
    """Every DKIM-Signature, verified independently (RFC 6376 §6.1)."""
    count = len(headers_of(raw).get_all("DKIM-Signature") or [])
    results = []
    for idx in range(count):
        verifier = dkim.DKIM(raw, minkey=1024, timeout=5)
        try:
            ok = verifier.verify(idx=idx, dnsfunc=dnsquery.dkim_dnsfunc)
            result = "pass" if ok else "fail"
        except dnsquery.TemporaryDnsError:
            result = "temperror"
        except dkim.DKIMException as exc:
            log.info("DKIM signature %d unusable: %s", idx, exc)
            result = "permerror" if isinstance(exc, dkim.MessageFormatError) else "fail"
        domain = (verifier.domain or b"").decode("ascii", "replace").lower()
        selector = (verifier.selector or b"").decode("ascii", "replace")
        if isinstance(verifier.selector, str):  # dkimpy's unset default is str "default"
            selector = ""
        results.append(DkimResult(result, domain, selector))
    return results


def organizational_domain(domain: str) -> str:
    labels = domain.rstrip(".").lower().split(".")
    return ".".join(labels[-2:])


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict = identical; relaxed = same organizational domain."""
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


_TAG = re.compile(r"^\s*([a-z]+)\s*=\s*(.*?)\s*$", re.IGNORECASE)


def dmarc_record(from_domain: str) -> dict[str, str] | None:
    """The policy for `from_domain`, falling back to its organizational domain (§6.6.3)."""
    for name in dict.fromkeys((from_domain, organizational_domain(from_domain))):
        for record in dnsquery.txt(f"_dmarc.{name}"):
            text = record.decode("ascii", "replace")
            tags = {}
            for part in text.split(";"):
                match = _TAG.match(part)
                if match:
                    tags[match.group(1).lower()] = match.group(2)
            if tags.get("v") == "DMARC1" and text.strip().startswith("v"):
                if name != from_domain and "sp" in tags:
                    tags["p"] = tags["sp"]
                return tags
    return None


def message_authenticate(*, ip: str, helo: str, mail_from: str, raw: bytes) -> AuthOutcome:
    outcome = AuthOutcome()
    outcome.spf, outcome.spf_domain = spf_check(ip=ip, mail_from=mail_from, helo=helo)
    outcome.dkim = dkim_check(raw)
    froms = from_addresses(headers_of(raw))
    if len({address_domain(a) for a in froms}) != 1:
        # RFC 7489 §6.6.1: no single author domain, no DMARC evaluation.
        outcome.dmarc = "permerror" if froms else "none"
        return outcome
    from_domain = address_domain(froms[0])
    outcome.from_domain = _ascii_domain(from_domain) or from_domain
    try:
        policy = dmarc_record(outcome.from_domain)
    except dnsquery.TemporaryDnsError:
        outcome.dmarc = "temperror"
        return outcome
    if policy is None:
        return outcome
    outcome.dmarc_policy = policy.get("p", "none").lower()
    spf_ok = outcome.spf == "pass" and _aligned(
        outcome.spf_domain, outcome.from_domain, policy.get("aspf", "r").lower()
    )
    dkim_ok = any(
        d.result == "pass" and _aligned(d.domain, outcome.from_domain, policy.get("adkim", "r"))
        for d in outcome.dkim
    )
    outcome.dmarc = "pass" if spf_ok or dkim_ok else "fail"
    return outcome
