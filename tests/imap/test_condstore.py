"""CONDSTORE (RFC 7162 §3.1) over real TLS connections with imaplib (issue 16).

Mod-sequences rise on every flag change, APPEND and expunge, are shared by sessions (and
processes: they live in a per-folder file), and survive a restart; CHANGEDSINCE, SEARCH
MODSEQ, STORE UNCHANGEDSINCE and STATUS/SELECT HIGHESTMODSEQ answer from them.
"""

from __future__ import annotations

import imaplib
import re
from typing import Any

import pytest

from mailplane.imap import modseq
from tests.imap.conftest import PASSWORD
from tests.support.fixtures import wait_for

pytestmark = pytest.mark.timeout(90)


def _msg(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n)


def _command(imap: imaplib.IMAP4, *words: str) -> tuple[str, list[Any], dict[str, list[Any]]]:
    imap.untagged_responses.clear()
    typ, data = imap._simple_command(*words)
    untagged = {name: list(values) for name, values in imap.untagged_responses.items()}
    imap.untagged_responses.clear()
    return typ, data, untagged


def _modseqs(imap: imaplib.IMAP4, *extra: str) -> dict[int, int]:
    """{UID: MODSEQ} from UID FETCH 1:* (MODSEQ) [modifiers]."""
    typ, _data, untagged = _command(imap, "UID", "FETCH", "1:*", "(MODSEQ)", *extra)
    assert typ == "OK"
    found = {}
    for line in untagged.get("FETCH", []):
        uid = re.search(rb"UID (\d+)", line)
        value = re.search(rb"MODSEQ \((\d+)\)", line)
        assert uid and value, line
        found[int(uid.group(1))] = int(value.group(1))
    return found


def _highest(untagged: dict[str, list[Any]]) -> int:
    return int(untagged["HIGHESTMODSEQ"][-1])


@pytest.fixture
def imap(imap_server: Any, make_mailbox: Any) -> Any:
    mailbox = make_mailbox()
    with imap_server.client() as client:
        client.login(mailbox.address, PASSWORD)
        for n in range(1, 5):
            assert client.append("INBOX", None, None, _msg(n))[0] == "OK"
        client.mailbox = mailbox
        yield client


def test_enable_then_select_reports_highestmodseq_and_changes_raise_it(imap):
    typ, _data, untagged = _command(imap, "ENABLE", "CONDSTORE")
    assert untagged["ENABLED"] == [b"CONDSTORE"]
    typ, _data = imap.select("INBOX")
    assert typ == "OK"
    first = _highest(imap.untagged_responses)
    before = _modseqs(imap)
    assert sorted(before) == [1, 2, 3, 4] and max(before.values()) == first
    # A flag change gets a value above every earlier one; its FETCH carries MODSEQ.
    typ, data = imap.store("2", "+FLAGS", "(\\Flagged)")
    assert typ == "OK" and re.search(rb"MODSEQ \((\d+)\)", data[0])
    after = _modseqs(imap)
    assert after[2] > first and {k: v for k, v in after.items() if k != 2} == {
        k: v for k, v in before.items() if k != 2
    }
    # Storing a flag the message already has changes nothing: same value.
    imap.store("2", "+FLAGS", "(\\Flagged)")
    assert _modseqs(imap)[2] == after[2]
    # CHANGEDSINCE: only what changed since, with MODSEQ (§3.1.4.1).
    assert _modseqs(imap, f"(CHANGEDSINCE {first})") == {2: after[2]}
    assert _modseqs(imap, f"(CHANGEDSINCE {after[2]})") == {}
    # An expunge raises HIGHESTMODSEQ; an APPEND gets a new, higher value.
    imap.store("1", "+FLAGS", "(\\Deleted)")
    flagged = _modseqs(imap)[1]
    imap.expunge()
    typ, data = imap.status("INBOX", "(HIGHESTMODSEQ)")
    assert int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1)) > flagged
    imap.append("INBOX", None, None, _msg(5))
    typ, data = imap.status("INBOX", "(HIGHESTMODSEQ MESSAGES)")
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1))
    assert _modseqs(imap)[5] == highest > flagged + 1


def test_first_enabling_command_in_selected_state_sends_highestmodseq(imap):
    imap.select("INBOX")
    typ, _data, untagged = _command(imap, "FETCH", "1", "(MODSEQ)")
    assert typ == "OK" and "HIGHESTMODSEQ" in untagged  # RFC 7162 §3.1
    typ, _data, untagged = _command(imap, "FETCH", "1", "(MODSEQ)")
    assert "HIGHESTMODSEQ" not in untagged  # only the first time
    # Once enabled, FETCH FLAGS answers carry MODSEQ too.
    typ, data = imap.fetch("1", "(FLAGS)")
    assert b"MODSEQ" in data[0]


def test_store_unchangedsince_refuses_messages_changed_since(imap):
    imap.select("INBOX")
    base = max(_modseqs(imap).values())
    imap.store("1,3", "+FLAGS", "(\\Seen)")
    typ, data, untagged = _command(
        imap, "STORE", "1:4", f"(UNCHANGEDSINCE {base})", "+FLAGS", "(\\Flagged)"
    )
    assert typ == "OK" and untagged["MODIFIED"] == [b"1,3"]  # RFC 7162 §3.1.3
    typ, data = imap.fetch("1:4", "(FLAGS)")
    flagged = [b"\\Flagged" in line for line in data]
    assert flagged == [False, True, False, True]
    # UID STORE: MODIFIED lists UIDs; UNCHANGEDSINCE 0 always fails (§3.1.3).
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    typ, _data, untagged = _command(
        imap, "UID", "STORE", "2,4", "(UNCHANGEDSINCE 0)", "+FLAGS", "(\\Answered)"
    )
    assert untagged["MODIFIED"] == [b"2,4"]
    # .SILENT: a FETCH with MODSEQ alone, for the messages that changed.
    changes = _modseqs(imap)
    typ, _data, untagged = _command(
        imap,
        "STORE",
        "1:3",
        f"(UNCHANGEDSINCE {max(changes.values())})",
        "+FLAGS.SILENT",
        "(\\Answered)",
    )
    assert typ == "OK" and "MODIFIED" not in untagged
    assert all(re.fullmatch(rb"\d+ \(MODSEQ \(\d+\)\)", line) for line in untagged["FETCH"])
    assert len(untagged["FETCH"]) == 3


def test_search_modseq_and_esearch_report_the_highest_value(imap):
    imap.select("INBOX")
    base = max(_modseqs(imap).values())
    imap.store("2", "+FLAGS", "(\\Seen)")
    imap.store("4", "+FLAGS", "(\\Seen)")
    values = _modseqs(imap)
    typ, _data, untagged = _command(imap, "SEARCH", "MODSEQ", str(base + 1))
    assert untagged["SEARCH"] == [b"2 4 (MODSEQ %d)" % values[4]]
    typ, _data, untagged = _command(
        imap, "SEARCH", "RETURN", "(MIN)", "MODSEQ", '"/flags/\\\\seen"', "all", str(base + 1)
    )
    assert typ == "OK"
    assert untagged["ESEARCH"][0].endswith(b"MIN 2 MODSEQ %d" % values[2])
    _typ, _data, untagged = _command(imap, "SEARCH", "NOT", "MODSEQ", str(base + 1))
    assert untagged["SEARCH"] == [b"1 3 (MODSEQ %d)" % max(values[1], values[3])]
    _typ, _data, untagged = _command(imap, "SEARCH", "MODSEQ", str(values[4] + 1))
    assert untagged["SEARCH"] == [b""]  # nothing matched: no MODSEQ part


def test_another_sessions_change_is_announced_with_its_modseq(imap_server, imap):
    _command(imap, "ENABLE", "CONDSTORE")
    imap.select("INBOX")
    base = max(_modseqs(imap).values())
    with imap_server.client() as other:
        other.login(imap.mailbox.address, PASSWORD)
        other.select("INBOX")
        other.store("3", "+FLAGS", "(\\Flagged)")

    def announced() -> list[bytes]:
        _typ, _data, untagged = _command(imap, "NOOP")
        return untagged.get("FETCH", [])

    lines = wait_for(announced, timeout=10)
    value = int(re.search(rb"MODSEQ \((\d+)\)", lines[0]).group(1))
    assert lines[0].startswith(b"3 (") and value > base
    assert _modseqs(imap, f"(CHANGEDSINCE {base})") == {3: value}


def test_modseqs_survive_a_restart(imap_server, imap):
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Seen)")
    before = _modseqs(imap)
    imap.logout()
    # What a restart loses: the process's caches. The values come back from the folder's
    # file, and the next change continues above them.
    modseq._CACHE.clear()
    with imap_server.client() as again:
        again.login(imap.mailbox.address, PASSWORD)
        again.select("INBOX")
        assert _modseqs(again) == before
        again.store("2", "+FLAGS", "(\\Seen)")
        assert _modseqs(again)[2] > max(before.values())


def test_log_compaction_keeps_values_and_drops_expunged(tmp_path):
    folder = str(tmp_path)
    given = {}
    expunged = modseq.modseq_bump(folder, [7], live=[1, 2, 7])[7]
    modseq.modseq_bump(folder, [], expunged=[7], live=[1, 2])
    for round_ in range(modseq._COMPACT_SLACK // 2 + 10):
        given.update(modseq.modseq_bump(folder, [1, 2], live=[1, 2]))
        if round_ == 0:
            modseq.modseq_bump(folder, [3], live=[1, 2, 3])
    state = modseq.modseqs_read(folder)
    assert state.of(1) == given[1] and state.of(2) == given[2]
    assert state.highest == max(given.values())
    assert 3 not in state.by_uid  # expunged (not live) by the time the log was rewritten
    assert 7 in state.expunged and state.expunged[7] > expunged  # kept for VANISHED
    assert state.floor == 0  # every expunge is still known
    with open(tmp_path / modseq.MODSEQ_FILE, "rb") as log:
        assert len(log.read().splitlines()) < modseq._COMPACT_SLACK


# -- QRESYNC (RFC 7162 §3.2) ---------------------------------------------------------------


def _select_state(imap: imaplib.IMAP4) -> tuple[int, int]:
    """SELECT INBOX; (UIDVALIDITY, HIGHESTMODSEQ)."""
    assert imap.select("INBOX")[0] == "OK"
    responses = imap.untagged_responses
    return int(responses["UIDVALIDITY"][0]), int(responses["HIGHESTMODSEQ"][-1])


def test_qresync_select_reports_vanished_and_changed_since_the_clients_state(imap_server, imap):
    typ, _data, untagged = _command(imap, "ENABLE", "QRESYNC")
    assert untagged["ENABLED"] == [b"QRESYNC"]
    validity, seen = _select_state(imap)
    # Another session changes a flag and expunges two messages while this one is away.
    with imap_server.client() as other:
        other.login(imap.mailbox.address, PASSWORD)
        other.select("INBOX")
        other.store("3", "+FLAGS", "(\\Flagged)")
        other.store("1,2", "+FLAGS", "(\\Deleted)")
        other.expunge()
    typ, _data, untagged = _command(imap, "SELECT", "INBOX", f"(QRESYNC ({validity} {seen}))")
    assert typ == "OK"
    assert untagged["VANISHED"] == [b"(EARLIER) 1:2"]
    # UIDs 1 and 2 went; UID 3 (now sequence 1) changed: its FETCH has UID, FLAGS, MODSEQ.
    (line,) = untagged["FETCH"]
    assert line.startswith(b"1 (") and b"UID 3" in line and b"\\Flagged" in line
    assert b"MODSEQ (" in line
    # Known UIDs limit both answers (§3.2.5): 4:5 changed nothing, lost nothing.
    typ, _data, untagged = _command(
        imap, "SELECT", "INBOX", f"(QRESYNC ({validity} {seen} 4:5 (1:2 4:5)))"
    )
    assert typ == "OK" and "VANISHED" not in untagged and "FETCH" not in untagged
    assert "CLOSED" in untagged  # the previous SELECT's mailbox ended (§3.2.11)
    # A UIDVALIDITY that is not the mailbox's: no resynchronisation data at all.
    typ, _data, untagged = _command(imap, "SELECT", "INBOX", f"(QRESYNC ({validity + 1} 1))")
    assert typ == "OK" and "VANISHED" not in untagged and "FETCH" not in untagged


def test_qresync_expunges_are_vanished_and_uid_fetch_vanished_modifier(imap):
    _command(imap, "ENABLE", "QRESYNC")
    _validity, seen = _select_state(imap)
    imap.store("2,4", "+FLAGS", "(\\Deleted)")
    typ, _data, untagged = _command(imap, "EXPUNGE")
    assert typ == "OK" and untagged["VANISHED"] == [b"2,4"] and "EXPUNGE" not in untagged
    typ, _data, untagged = _command(
        imap, "UID", "FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {seen} VANISHED)"
    )
    assert typ == "OK" and untagged["VANISHED"] == [b"(EARLIER) 2,4"]
    assert "FETCH" not in untagged  # 1 and 3 did not change
    typ, _data, untagged = _command(
        imap, "UID", "FETCH", "3:*", "(FLAGS)", f"(CHANGEDSINCE {seen} VANISHED)"
    )
    assert untagged["VANISHED"] == [b"(EARLIER) 4"]


def test_qresync_needs_enable_and_well_formed_parameters(imap_server, imap):
    _typ, data = imap.status("INBOX", "(UIDVALIDITY HIGHESTMODSEQ)")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
    seen = int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1))
    imap.select("INBOX")
    bad = [
        ("SELECT", "INBOX", f"(QRESYNC ({validity} {seen}))"),  # not enabled: BAD
        ("UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE 1 VANISHED)"),
    ]
    for words in bad:
        with pytest.raises(imaplib.IMAP4.error):
            imap._simple_command(*words)
    _command(imap, "NOOP")
    imap.logout()
    with imap_server.client() as again:
        again.login(imap.mailbox.address, PASSWORD)
        _command(again, "ENABLE", "QRESYNC")
        malformed = [
            "(QRESYNC)",
            "(QRESYNC ())",
            f"(QRESYNC ({validity}))",
            f"(QRESYNC ({validity} 0))",
            f"(QRESYNC (0 {seen}))",
            f"(QRESYNC ({validity} 99999999999999999999))",
            f"(QRESYNC ({validity} {seen} *))",
            f"(QRESYNC ({validity} {seen} 1:99999999999))",
            f"(QRESYNC ({validity} {seen} 1:2 3:4))",
            f"(QRESYNC ({validity} {seen} 1:2 (1 2) extra))",
            f"(QRESYNC (abc {seen}))",
        ]
        for param in malformed:
            with pytest.raises(imaplib.IMAP4.error):
                again._simple_command("SELECT", "INBOX", param)
            _command(again, "NOOP")  # five BADs in a row would end the session
        assert again.select("INBOX")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error, match="VANISHED needs UID FETCH"):
            again._simple_command("FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE 1 VANISHED)")
