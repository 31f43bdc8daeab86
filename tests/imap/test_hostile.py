"""Issue 8's IMAP defects over real TLS connections, one regression test each.

1. `DELETE "."` emptied the organization's directory (every mailbox's mail).
2. `LIST "" "%%%…%"` backtracked exponentially and froze the service for every tenant.
3. 28 inputs ended the connection with `* BYE [SERVERBUG]` and a traceback.
Plus: Sent's UIDs follow arrival order (issue 9, item 4).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailplane.storage import maildir_deliver
from tests.imap.conftest import PASSWORD
from tests.imap.hostile import REPLY_BOUND, HostileClient
from tests.support.fs_snapshot import tree_snapshot

pytestmark = pytest.mark.timeout(180)

MESSAGE = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: %s\r\n\r\nHello %s\r\n"


def _msg(subject: str) -> bytes:
    return MESSAGE % (subject.encode(), subject.encode())


@pytest.fixture
def connect(imap_server: Any) -> Iterator[Callable[[], HostileClient]]:
    clients: list[HostileClient] = []

    def make() -> HostileClient:
        client = HostileClient(imap_server.host, imap_server.tls_port)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Errors and tracebacks the server logged (its loop runs in this process)."""
    caplog.set_level(logging.INFO)

    def errors() -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]

    return errors


DOT_NAMES = [
    b'"."',
    b'".."',
    b'""',
    b'"/"',
    b'"./"',
    b'"../x"',
    b'"INBOX/.."',
    b'"a/../.."',
    b'"Sent/.."',
    b'".Sent"',
    b'"/tmp"',
    b'"Sent//"',
]


def test_dot_names_cannot_touch_the_organization_or_the_mailbox(
    imap_server, make_account, make_mailbox, connect, server_errors
):
    """Defect 1: `DELETE "."` resolved to `<mailbox>/..` and removed every sibling's mail."""
    account = make_account()
    caller, sibling = make_mailbox(account), make_mailbox(account)
    org = account.org.pk
    maildir_deliver(organization_id=org, address=sibling.address, raw=_msg("sibling"))
    maildir_deliver(organization_id=org, address=caller.address, raw=_msg("mine"))
    org_dir = imap_server.storage_root / f"org-{org}"
    sibling_before = tree_snapshot(org_dir / sibling.address)
    c = connect()
    c.login(caller.address, PASSWORD)
    for name in DOT_NAMES:
        for command in (
            b"DELETE %s",
            b"SELECT %s",
            b"EXAMINE %s",
            b"STATUS %s (MESSAGES)",
            b'RENAME %s "Moved"',
            b'RENAME "Drafts" %s',
            b"CREATE %s",
            b"SUBSCRIBE %s",
        ):
            line = command % name
            status, lines = c.command(line)
            assert status in (b"NO", b"BAD"), (line, lines)
            c.ok(b"NOOP")  # five BADs in a row would end the session by design
    assert tree_snapshot(org_dir / sibling.address) == sibling_before
    assert sorted(p.name for p in org_dir.iterdir()) == sorted([caller.address, sibling.address])
    listed = b"".join(c.ok(b'LIST "" "*"'))
    for folder in (b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk"):
        assert folder in listed
    assert b"* 1 EXISTS" in b"".join(c.ok(b"SELECT INBOX"))
    assert server_errors() == []


def test_list_patterns_answer_quickly_and_are_bounded(
    imap_server, make_mailbox, connect, server_errors
):
    """Defect 2: 40 "%" took 46 s; 80 never answered."""
    mailbox = make_mailbox()
    c = connect()
    c.login(mailbox.address, PASSWORD)
    for folder in (b"Work", b"Work/2026", b"Work/2026/Q1"):
        c.ok(b'CREATE "%s"' % folder)
    for pattern in (b"%" * 80, b"%" * 500 + b"x", b"*%" * 400, b"%a" * 500):
        started = time.monotonic()
        status, lines = c.command(b'LIST "" "' + pattern + b'"')
        assert status == b"OK" and time.monotonic() - started < 2.0, lines[-1]
    status, lines = c.command(b'LIST "" "' + b"%" * 2000 + b'"')
    assert status == b"NO" and b"[LIMIT]" in lines[-1]
    top = [line for line in c.ok(b'LIST "" "%"') if line.startswith(b"* LIST")]
    assert any(line.rstrip().endswith(b"Work") for line in top), top
    assert not any(b"Work/2026" in line for line in top)  # "%" stops at the separator
    every = b"".join(c.ok(b'LIST "" "*"'))
    assert b" Work/2026/Q1\r\n" in every
    assert b"INBOX" in b"".join(c.ok(b'LIST "" "inBoX"'))  # INBOX is case-insensitive
    assert server_errors() == []


def test_another_tenant_is_served_while_one_client_attacks(
    imap_server, make_mailbox, connect, server_errors
):
    """Defect 2's blast radius: one client's command must not starve the event loop.

    The attacker sends, for as long as the victim's session lasts, the most expensive
    commands the limits allow (LIST wildcards, SEARCH with thousands of keys over a mailbox
    of messages); another tenant's client must complete TLS, LOGIN and SELECT within a bound.
    """
    attacker, victim = make_mailbox(), make_mailbox()
    for n in range(150):
        maildir_deliver(
            organization_id=attacker.organization_id,
            address=attacker.address,
            raw=_msg(f"m{n}") + b"padding line\r\n" * 40,
        )
    a = connect()
    a.login(attacker.address, PASSWORD)
    a.ok(b"SELECT INBOX")
    heavy = [
        b'LIST "" "' + b"%" * 80 + b'"',
        b"SEARCH " + b" ".join(b"NOT BODY nomatch%d" % n for n in range(199)),
        b'LIST "" "' + b"*%" * 500 + b'z"',
    ]
    stop = threading.Event()
    failures: list[BaseException] = []
    attacks = 0

    def attack() -> None:
        nonlocal attacks
        try:
            while not stop.is_set():
                a.command(heavy[attacks % len(heavy)])
                attacks += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    try:
        # Make sure the attack is under way before timing the victim.
        deadline = time.monotonic() + REPLY_BOUND
        while attacks < 1 and not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):
            started = time.monotonic()
            v = connect()
            v.login(victim.address, PASSWORD)
            v.ok(b"SELECT INBOX")
            v.close()
            elapsed = time.monotonic() - started
            assert elapsed < 10.0, f"victim session took {elapsed:.1f} s under attack"
    finally:
        stop.set()
        thread.join(REPLY_BOUND * 2)
    assert not failures, failures
    assert attacks >= 1 and a.slowest < REPLY_BOUND
    assert server_errors() == []


def _crash_cases() -> list[tuple[bytes, tuple[bytes, ...], bytes | None]]:
    """(command, acceptable statuses, response code wanted): each once ended in BYE."""
    nested = b"(" * 2000 + b"ALL" + b")" * 2000
    return [
        (b'CREATE "Projects"', (b"OK",), None),
        (b'CREATE "Projects"', (b"NO",), b"[ALREADYEXISTS]"),
        (b'CREATE "projects/../../x"', (b"NO", b"BAD"), None),
        (b'CREATE "a/../../x"', (b"NO", b"BAD"), None),
        (b'SELECT "."', (b"NO",), None),
        (b'SELECT "/"', (b"NO",), None),
        (b'EXAMINE "."', (b"NO",), None),
        (b'EXAMINE "/"', (b"NO",), None),
        (b'STATUS "." (MESSAGES)', (b"NO",), None),
        (b'STATUS "/" (MESSAGES UIDNEXT)', (b"NO",), None),
        (b'DELETE ""', (b"NO",), None),
        (b'RENAME "NoSuchBox" "X"', (b"NO",), b"[NONEXISTENT]"),
        (b'RENAME "Projects" "Sent"', (b"NO",), b"[ALREADYEXISTS]"),
        (b'RENAME "Projects" "Projects/inner"', (b"NO",), None),
        (b'CREATE "&Jjo"', (b"NO", b"BAD"), None),
        (b'CREATE "&"', (b"NO", b"BAD"), None),
        (b'SELECT "&2AA-"', (b"NO", b"BAD"), None),  # a lone surrogate
        (b'CREATE "Later/"', (b"OK",), None),
        (b'SELECT "Later"', (b"OK",), None),
        (b'SELECT "INBOX"', (b"OK",), None),
        (b"SEARCH " + nested, (b"BAD",), None),
        (b"UID SEARCH " + nested, (b"BAD",), None),
        (b"FETCH 1 " + nested, (b"BAD",), None),
        (b"SEARCH " + b" ".join(b"BODY x%d" % n for n in range(2500)), (b"NO",), b"[LIMIT]"),
        (b"SEARCH " + b"OR " * 300 + b"ALL" + b" ALL" * 300, (b"NO", b"BAD"), None),
        (b"CREATE {9+}\r\nbad\r\nname", (b"NO", b"BAD"), None),
        (b'DELETE "NoSuchBox"', (b"NO",), b"[NONEXISTENT]"),
        (b'DELETE "INBOX"', (b"NO",), None),
        (b'RENAME "INBOX" "Old"', (b"NO",), None),
        (b'DELETE "Projects"', (b"OK",), None),
    ]


def test_hostile_commands_get_tagged_answers_never_bye(
    imap_server, make_mailbox, connect, server_errors
):
    """Defect 3: each of these crashed the connection with BYE [SERVERBUG]."""
    mailbox = make_mailbox()
    maildir_deliver(
        organization_id=mailbox.organization_id, address=mailbox.address, raw=_msg("one")
    )
    c = connect()
    c.login(mailbox.address, PASSWORD)
    c.ok(b"SELECT INBOX")
    for command, statuses, code in _crash_cases():
        status, lines = c.command(command)
        assert status in statuses, (command[:60], lines[-1])
        if code is not None:
            assert code in lines[-1], (command[:60], lines[-1])
        c.ok(b"NOOP")
    listed = b"".join(c.ok(b'LIST "" "*"'))
    assert b" Later\r\n" in listed and b"Projects" not in listed
    assert server_errors() == []


def test_sent_uids_follow_arrival_order(imap_server, make_mailbox, connect):
    """Issue 9 item 4: the oldest message in Sent got UID 3 (pymap numbered by listdir)."""
    mailbox = make_mailbox()
    subjects = [f"sent-{n:02d}" for n in range(25)]
    for subject in subjects:
        maildir_deliver(
            organization_id=mailbox.organization_id,
            address=mailbox.address,
            raw=_msg(subject),
            folder="Sent",
        )
    c = connect()
    c.login(mailbox.address, PASSWORD)
    c.ok(b"SELECT Sent")
    lines = c.ok(b"UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    seen = [line.split(b"Subject: ")[1].strip().decode() for line in lines if b"Subject: " in line]
    assert seen == subjects
