"""The record rules on their own (no DNS): edge cases of SPF, DKIM and DMARC syntax."""

from __future__ import annotations

import pytest

from mailplane.dns import Lookup, Outcome
from mailplane.domains.models import RecordStatus
from mailplane.domains.verification import dkim_evaluate, dmarc_evaluate, spf_evaluate

INCLUDE = "_spf.mailplane.localhost"


def _txt(*records: str) -> Lookup[str]:
    return Lookup("acme.test", "TXT", Outcome.FOUND, records)


@pytest.mark.parametrize(
    ("record", "status"),
    [
        ("v=spf1 include:_spf.mailplane.localhost ~all", RecordStatus.OK),
        ("V=SPF1 INCLUDE:_spf.MAILPLANE.localhost -all", RecordStatus.OK),
        ("v=spf1 +include:_spf.mailplane.localhost. -all", RecordStatus.OK),
        ("v=spf1 -all include:_spf.mailplane.localhost", RecordStatus.INVALID),  # after all
        ("v=spf1 ~include:_spf.mailplane.localhost -all", RecordStatus.INVALID),  # softfail
        ("v=spf1 include:_spf.mailplane.localhost.evil -all", RecordStatus.INVALID),
        ("v=spf10 include:_spf.mailplane.localhost", RecordStatus.MISSING),  # not SPF
    ],
)
def test_spf_rules(record, status):
    assert spf_evaluate(_txt(record), include_host=INCLUDE).status == status


@pytest.mark.parametrize(
    ("record", "status", "words"),
    [
        ("v=DKIM1; k=rsa; p=KEY", RecordStatus.OK, "public key found"),
        ("p=KEY", RecordStatus.OK, "public key found"),
        ("v=DKIM1; p=K E\tY", RecordStatus.OK, "public key found"),
        ("v=DKIM2; p=KEY", RecordStatus.INVALID, "v=DKIM2"),
        ("v=DKIM1; k=ed25519; p=KEY", RecordStatus.INVALID, "k=ed25519"),
        ("v=DKIM1; p=KEY; p=KEY", RecordStatus.INVALID, "repeats a tag"),
        ("v=DKIM1; k=rsa", RecordStatus.INVALID, "no p= tag"),
    ],
)
def test_dkim_rules(record, status, words):
    check = dkim_evaluate(_txt(record), public_key="KEY")
    assert check.status == status
    assert words in check.detail


def test_dkim_two_records_at_selector_are_invalid():
    check = dkim_evaluate(_txt("v=DKIM1; p=KEY", "v=DKIM1; p=OLD"), public_key="KEY")
    assert check.status == RecordStatus.INVALID
    assert "RFC 6376 §3.6.2.2" in check.detail


@pytest.mark.parametrize(
    ("records", "status"),
    [
        (("v=DMARC1; p=none",), RecordStatus.OK),
        (("v = DMARC1 ; p=Quarantine; pct=50",), RecordStatus.OK),
        (("v=DMARC1; p=reject", "some-other-verification=1"), RecordStatus.OK),
        (("v=dmarc1; p=none",), RecordStatus.MISSING),  # RFC 7489 §6.4: DMARC1 exactly
        (("v=DMARC1; rua=mailto:x@acme.test",), RecordStatus.INVALID),  # no policy
        (("p=none; v=DMARC1",), RecordStatus.MISSING),  # v must come first
    ],
)
def test_dmarc_rules(records, status):
    assert dmarc_evaluate(_txt(*records)).status == status


def test_errors_and_missing_pass_through_with_reason():
    failed = Lookup("acme.test", "TXT", Outcome.ERROR, reason="resolver answered SERVFAIL")
    check = spf_evaluate(failed, include_host=INCLUDE)
    assert check.status == RecordStatus.ERROR
    assert "SERVFAIL" in check.detail
    missing = Lookup("acme.test", "TXT", Outcome.MISSING, reason="acme.test has no TXT records")
    assert dmarc_evaluate(missing).status == RecordStatus.MISSING
