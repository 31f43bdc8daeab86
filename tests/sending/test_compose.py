"""message_compose's header fast path (set_raw for short printable ASCII) writes the very
bytes the email package's header registry would: checked on generated values."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from email.policy import SMTP

from hypothesis import given, settings
from hypothesis import strategies as st

from mailplane.sending.compose import _header_set

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=90)
local = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,20}", fullmatch=True).filter(
    lambda s: ".." not in s and not s.endswith(".")
)
address = st.builds(
    lambda a, b: f"{a}@{b}.test", local, st.from_regex(r"[a-z]{1,12}", fullmatch=True)
)
mailbox = st.builds(
    lambda name, addr: email.utils.formataddr((name, addr)) if name else addr,
    printable.map(str.strip),
    address,
)


def _written(name: str, value: str, *, fast: bool) -> bytes:
    message = EmailMessage(policy=SMTP)
    if fast:
        _header_set(message, name, value)
    else:
        message[name] = value
    message.set_content("x")
    return message.as_bytes(policy=SMTP)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["Subject", "X-Campaign", "Comments"]), printable)
def test_unstructured_fields_are_written_as_the_registry_writes_them(name, value):
    if any(c in value for c in "\r\n"):
        return
    assert _written(name, value, fast=True) == _written(name, value, fast=False)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["From", "To", "Cc", "Reply-To"]), st.lists(mailbox, min_size=1, max_size=4))
def test_address_fields_are_written_as_the_registry_writes_them(name, boxes):
    value = ", ".join(boxes)
    assert _written(name, value, fast=True) == _written(name, value, fast=False)
