"""tracking/tokens.py: 26 characters, one spelling, anything else is no token."""

from __future__ import annotations

import pytest

from mailplane.tracking.tokens import TOKEN_LENGTH, Token, key_new, token_make, token_parse


def test_round_trip_and_keys_differ():
    key = key_new()
    text = token_make(key=key, recipient=0, link=7)
    assert len(text) == TOKEN_LENGTH
    assert token_parse(text) == Token(key=key, recipient=0, link=7)
    assert len({key_new() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "text",
    ["", "x", "A" * 25, "A" * 27, "A" * 10_000, "!" * 26, "é" * 26, "A" * 25 + "=", "A" * 25 + "B"],
)
def test_not_tokens(text):
    assert token_parse(text) is None
