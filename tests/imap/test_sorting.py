"""RFC 5256 rules without a server: base subjects, SORT order, THREAD trees (issue 16).

The protocol path is tested over imaplib in test_extensions.py and by imaptest's sort-*
and thread* scripts; these pin the rules and the limits a hostile mailbox could reach.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from mailplane.imap.sorting import (
    SortItem,
    base_subject,
    base_subject_reply,
    ordered_subject_threads,
    references_threads,
    sort_items,
    thread_text,
)

WHEN = datetime(2025, 3, 1, tzinfo=UTC)


def _item(seq: int, header: str, *, size: int = 100) -> SortItem:
    return SortItem(seq, seq, WHEN, size, header.encode() + b"\r\n")


def _threads(items: list[SortItem], algorithm=references_threads) -> bytes:
    return b"".join(b"(%b)" % thread_text(t, lambda i: i.seq) for t in algorithm(items))


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Re: hello", "hello", True),
        ("Fwd: [list] Re: hello (fwd)", "hello", True),
        ("[list] hello", "hello", False),
        ("[list]", "[list]", False),  # a blob alone is the subject (§2.1 step 4)
        ("[fwd: re: hello]", "hello", True),
        ("hello   world \t", "hello world", False),
        ("Re:", "", True),
        ("", "", False),
    ],
)
def test_base_subject_extraction(subject, base, reply):
    assert base_subject_reply(subject) == (base, reply)
    assert base_subject(subject) == base


def test_sort_keeps_mailbox_order_for_ties_and_reverses_per_key():
    items = [_item(1, "Subject: b", size=10), _item(2, "Subject: a", size=10)]
    items.append(_item(3, "Subject: b", size=5))
    assert [i.seq for i in sort_items(items, [(b"SUBJECT", False)])] == [2, 1, 3]
    assert [i.seq for i in sort_items(items, [(b"SUBJECT", True)])] == [1, 3, 2]
    assert [i.seq for i in sort_items(items, [(b"SIZE", False), (b"SUBJECT", False)])] == [
        3,
        2,
        1,
    ]


def test_references_loop_keeps_the_later_messages_own_parent():
    # imaptest's "thread" script: b references a then c; c references b. c's own header
    # replaces the parent b's references presumed (a), and c -> b would be a loop.
    items = [
        _item(1, "Message-ID: <a@b>\r\nDate: Fri, 22 Feb 2008 17:06:23 +0000"),
        _item(
            2,
            "Message-ID: <b@b>\r\nReferences: <a@b> <c@b>\r\nDate: Fri, 22 Feb 2008 15:06:23 +0000",
        ),
        _item(3, "Message-ID: <c@b>\r\nReferences: <b@b>\r\nDate: Fri, 22 Feb 2008 16:06:25 +0000"),
    ]
    assert _threads(items) == b"(3 2)(1)"


def test_references_self_reference_and_duplicate_ids_are_separate_messages():
    items = [
        _item(1, "Message-ID: <a@x>\r\nReferences: <a@x>"),
        _item(2, "Message-ID: <a@x>"),  # duplicate: a message of its own
        _item(3, "References: <a@x>"),  # no Message-ID at all
    ]
    assert _threads(items) == b"(1 3)(2)"


def test_a_chain_of_thousands_of_replies_needs_no_recursion():
    # Each message replies to the previous: depth 20,000. Recursion per level would raise
    # RecursionError (a long mailing-list thread, or a hostile mailbox).
    depth = 20_000
    items = [_item(1, "Message-ID: <m1@x>\r\nSubject: chain")]
    for n in range(2, depth + 1):
        items.append(
            _item(n, f"Message-ID: <m{n}@x>\r\nIn-Reply-To: <m{n - 1}@x>\r\nSubject: Re: chain")
        )
    started = time.monotonic()
    text = _threads(items)
    assert text == b"(" + b" ".join(b"%d" % n for n in range(1, depth + 1)) + b")"
    # Linear: a reply to an older message needs no walk up the chain for loop checks.
    assert time.monotonic() - started < 10


def test_many_siblings_and_deep_branches_are_written_as_nested_lists():
    items = [_item(1, "Message-ID: <r@x>")]
    items += [_item(n, f"Message-ID: <c{n}@x>\r\nReferences: <r@x>") for n in range(2, 5)]
    items.append(_item(5, "Message-ID: <g@x>\r\nReferences: <r@x> <c2@x>"))
    assert _threads(items) == b"(1 (2 5)(3)(4))"


def test_ordered_subject_threads_parent_then_siblings():
    items = [
        _item(1, "Subject: x\r\nDate: Sat, 01 Mar 2025 12:00:00 +0000"),
        _item(2, "Subject: Re: x\r\nDate: Sat, 01 Mar 2025 10:00:00 +0000"),
        _item(3, "Subject: y\r\nDate: Sat, 01 Mar 2025 11:00:00 +0000"),
        _item(4, "Subject: x\r\nDate: Sat, 01 Mar 2025 13:00:00 +0000"),
    ]
    assert _threads(items, ordered_subject_threads) == b"(2 (1)(4))(3)"
