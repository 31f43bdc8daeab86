"""IMAP listeners: implicit TLS (993) and STARTTLS (143), both served by pymap.

pymap runs the protocol (`IMAPServer`, `IMAPConnection`, `ConnectionState`); the subclasses
here add only what a public server needs and pymap leaves open:
- implicit TLS: the listener is wrapped in an SSL context and the connection starts in the
  "TLS already negotiated" state (no STARTTLS offered, LOGIN allowed);
- no plaintext passwords before TLS, even from localhost (RFC 9051 §6.2.3);
- read timeouts: short before login, 30 minutes after (RFC 9051 §5.4 autologout), ended
  with an untagged BYE;
- a cap on non-synchronizing literals ({n+}, RFC 7888) that pymap would otherwise read
  whole into memory before parsing, and on line length;
- a bound on parenthesis nesting, checked before pymap's recursive parser runs (2,000
  nested SEARCH keys raised RecursionError), and any parser exception answered BAD;
- a guard around every command: a domain error a service raises is answered as it renders
  itself (imap/errors.py: NO [NOPERM], NO [NONEXISTENT], NO [TOOBIG]…); any other exception
  pymap does not turn into a response would end the connection with BYE [SERVERBUG]; here
  it is a tagged NO [SERVERBUG] (RFC 5530 §3) and the connection, its selected mailbox and
  every other client carry on;
- SELECT and EXAMINE of a mailbox suspended or deleted since its login are refused
  (`mailboxes.services.mailbox_access_check`, the rule login applies).
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import ssl
from asyncio import StreamReader, StreamWriter
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, closing, suppress
from dataclasses import dataclass
from typing import Any, cast

from proxyprotocol.reader import ProxyProtocolReader
from proxyprotocol.sock import SocketInfo
from pymap.backend import backends
from pymap.context import connection_exit, socket_info
from pymap.exceptions import MailboxError, ResponseError
from pymap.fetch import MessageAttributes
from pymap.imap import IMAPConnection, IMAPServer
from pymap.imap.state import ConnectionState
from pymap.parsing import Params
from pymap.parsing.command import Command
from pymap.parsing.command.auth import ListCommand, SelectCommand, StatusCommand
from pymap.parsing.command.select import (
    CloseCommand,
    FetchCommand,
    SearchCommand,
    StoreCommand,
)
from pymap.parsing.commands import InvalidCommand
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import List, Number
from pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBad,
    ResponseBye,
    ResponseCode,
    ResponseNo,
    ResponseOk,
    UntaggedResponse,
)
from pymap.parsing.response.code import PermanentFlags
from pymap.parsing.response.specials import (
    FetchResponse,
    FlagsResponse,
    StatusResponse,
)
from pymap.parsing.specials import (
    FetchAttribute,
    FetchRequirement,
    FetchValue,
    SequenceSet,
    StatusAttribute,
    Tag,
)
from pymap.parsing.specials.flag import Flag, Recent, Wildcard, get_system_flags
from pymap.parsing.state import ParsingInterrupt, ParsingState
from pysasl.exception import AuthenticationError

from mailplane.core.errors import DomainError
from mailplane.imap.auth import mailbox_access_verify
from mailplane.imap.backend import (
    Login,
    MailplaneBackend,
    MailplaneConfig,
    MailplaneSession,
    message_content_exists,
)
from mailplane.imap.condstore import (
    MODSEQ_ATTR,
    QresyncParams,
    condstore_enabled,
    condstore_install,
    highest_modseq_response,
    modseq_of,
    modseq_value,
    qresync_enabled,
    search_uses_modseq,
    vanished_response,
)
from mailplane.imap.errors import DomainErrorResponse
from mailplane.imap.extensions import (
    ENABLEABLE,
    SUPPORTED_CHARSETS,
    CharsetRefused,
    EnableCommand,
    ExtendedListCommand,
    ExtendedListResponse,
    SortCommand,
    ThreadCommand,
)
from mailplane.imap.protocol import protocol_install
from mailplane.imap.sorting import (
    SortItem,
    ordered_subject_threads,
    references_threads,
    sort_items,
    thread_text,
)
from mailplane.storage.maildir import UnsafeFolderPath

log = logging.getLogger("mailplane.imap")
_PYMAP_LOG = logging.getLogger("pymap.imap")  # pymap's protocol trace (debug level)

# pymap's plug-in registry; `pymap mailplane` would find the backend here.
backends.add("mailplane", MailplaneBackend)
# pymap's modified UTF-7 decoder loops forever on an unterminated "&" shift; the parser gets
# ours, with the other protocol corrections (see `mailplane.imap.protocol`).
protocol_install()
condstore_install()  # after protocol_install: it wraps the SEARCH criteria factory

# Before login only LOGIN/AUTHENTICATE arguments can arrive as literals: a few KB at most.
PRE_AUTH_LITERAL_MAX = 4096
TLS_HANDSHAKE_TIMEOUT = 10.0
# After LOGOUT (or any end) asyncio sends TLS close_notify and then waits for the client's
# close_notify before closing the socket, 30 s by default. Clients that answer a close_notify
# only by closing the TCP connection themselves (imaptest, Dovecot's TLS library: about one
# LOGOUT in seven here) then waited 30 s for the server to hang up. RFC 8446 §6.1 lets the
# closing side leave without the peer's close_notify; a short grace keeps the polite path.
TLS_SHUTDOWN_TIMEOUT = 1.0
# Deepest parenthesis nesting accepted in a command line. Real clients nest SEARCH keys a
# few levels; pymap's parser and search evaluation recurse once (or more) per level.
MAX_NESTING = 32
_FLAGS_ATTR = FetchAttribute(b"FLAGS")
_UID_ATTR = FetchAttribute(b"UID")
# Untagged responses written per batch of a long answer (see `write_response`).
WRITE_BATCH = 64


def nesting_depth(line: bytes) -> int:
    """The deepest "(" nesting outside quoted strings (RFC 9051 §4.3), in one pass."""
    depth = deepest = 0
    quoted = escaped = False
    for byte in line:
        if quoted:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                quoted = False
        elif byte == 0x22:
            quoted = True
        elif byte == 0x28:
            depth += 1
            deepest = max(deepest, depth)
        elif byte == 0x29:
            depth = max(depth - 1, 0)
    return deepest


def _refused(line: memoryview, params: Params, message: bytes) -> RefusedCommand:
    # Without a tag the answer is untagged ("*"), as pymap answers a missing tag.
    with suppress(NotParseable):
        params = params.copy(tag=Tag.parse(line, params)[0].value)
    return RefusedCommand(params, message)


class RefusedCommand(InvalidCommand):
    """A command line pymap could not parse safely: answered BAD with our message."""

    def __init__(self, params: Params, message: bytes) -> None:
        super().__init__(params, None)
        self._message = message

    @property
    def message(self) -> bytes:
        return self._message


class _ByeSent(EOFError):
    """The connection was ended with an untagged BYE; pymap's loop just stops."""


class MailplaneConnectionState(ConnectionState):
    """pymap's state machine, aware of implicit TLS and strict about plaintext logins."""

    def __init__(self, login: Login, config: MailplaneConfig, *, implicit_tls: bool) -> None:
        super().__init__(login, config)
        self.implicit_tls = implicit_tls
        self._announced: frozenset[Flag] = frozenset()  # keywords FLAGS has introduced
        self._enabled: set[bytes] = set()  # RFC 5161 ENABLE, for this connection
        if implicit_tls:
            # RFC 8314 §3: on an implicit-TLS port the session is already protected.
            self.auth = config.tls_auth
            self._capability.remove(b"STARTTLS")

    @property
    def authenticated(self) -> bool:
        return self._session is not None

    async def do_greeting(self) -> ResponseOk:
        # pymap lets localhost clients log in without TLS; we do not (RFC 9051 §6.2.3).
        return ResponseOk(b"*", self.config.greeting, self.capability)

    async def do_select(self, cmd: SelectCommand) -> tuple[CommandResponse, Any]:
        """pymap's SELECT, with FLAGS sent before PERMANENTFLAGS.

        RFC 9051 §6.3.2: every keyword PERMANENTFLAGS lists must have been introduced by
        FLAGS; imaptest (like clients that build their flag list from FLAGS) rejected the
        keywords pymap listed first in PERMANENTFLAGS. A mailbox suspended or deleted
        since its login opens no folder (a DomainError: NO [NOPERM] or NO [NONEXISTENT]),
        and, as any failed SELECT, leaves none selected (RFC 9051 §6.3.2).
        """
        if any(name not in (b"CONDSTORE", b"QRESYNC") for name in cmd.options.options):
            # RFC 4466 §2.1: select parameters we do not offer are an error; a BAD
            # command changes nothing, so the selected mailbox stays selected.
            return ResponseBad(cmd.tag, b"Unsupported SELECT parameter."), None
        resync: QresyncParams | None = None
        if cmd.options.has(b"QRESYNC"):
            if not qresync_enabled.get():  # RFC 7162 §3.2.5: only after ENABLE QRESYNC
                return ResponseBad(cmd.tag, b"QRESYNC is not enabled."), None
            try:
                resync = QresyncParams.parse(cmd.options.get(b"QRESYNC"))
            except ValueError:
                return ResponseBad(cmd.tag, b"Invalid QRESYNC parameter."), None
        closed = []
        if self._selected is not None and qresync_enabled.get():
            # RFC 7162 §3.2.11: the end of the previous mailbox's responses.
            closed.append(
                UntaggedResponse(
                    b"Previous mailbox closed.", ResponseCode.of(b"CLOSED"), condition=b"OK"
                )
            )
        self._selected = None
        check = functools.partial(mailbox_access_verify, address=self.session.owner)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(cast(MailplaneConfig, self.config).auth_executor, check)
        if cmd.options.has(b"CONDSTORE"):
            await self._condstore_on()  # RFC 7162 §3.1.8
        response, updates = await super().do_select(cmd)
        response._untagged[:0] = closed
        if condstore_enabled.get() and updates is not None:
            # RFC 7162 §3.1.2.1: every SELECT/EXAMINE once CONDSTORE is on.
            highest = cast(MailplaneSession, self.session).selected_modseqs(updates).highest
            response.add_untagged(highest_modseq_response(highest))
            if resync is not None:
                updates = await self._resync(response, updates, resync)
        untagged = response._untagged
        flags = [u for u in untagged if isinstance(u, FlagsResponse)]
        response._untagged = flags + [u for u in untagged if not isinstance(u, FlagsResponse)]
        self._announced = frozenset(
            flag for u in flags for flag in u.flags if isinstance(flag, Flag) and not flag.is_system
        )
        return response, updates

    def _keyword_announcements(self) -> list[UntaggedResponse]:
        """Untagged FLAGS and PERMANENTFLAGS when the mailbox has keywords not yet announced.

        RFC 9051 §7.3.5: the FLAGS list of the selected mailbox can grow (another session
        stores a new keyword); the client must hear of it before a FETCH shows the
        keyword, as Dovecot does. pymap never re-sent FLAGS. A keyword is defined in the
        mailbox's keyword file before any message carries it, so checking the file after
        the command ran covers every FETCH the command answers with.
        """
        selected, session = self._selected, self._session
        if selected is None or not isinstance(session, MailplaneSession):
            return []
        new = session.defined_keywords(selected) - self._announced
        if not new:
            return []
        self._announced = self._announced | new
        defined = get_system_flags() | self._announced
        permanent = (defined - {Recent}) | ({Wildcard} if not selected.readonly else set())
        return [
            FlagsResponse(defined),
            UntaggedResponse(b"Flags permitted.", PermanentFlags(permanent), condition=b"OK"),
        ]

    async def receive_updates(self, cmd: Any, done: Any) -> Any:
        untagged = list(await super().receive_updates(cmd, done))
        if untagged:
            return self._keyword_announcements() + untagged
        return untagged

    async def do_close(self, cmd: CloseCommand) -> tuple[CommandResponse, Any]:
        """RFC 9051 §6.4.1: CLOSE of a mailbox opened with EXAMINE expunges nothing and is OK.

        pymap's CLOSE always expunges, and its expunge refuses a read-only mailbox with NO
        [READ-ONLY], leaving the mailbox selected.
        """
        if self.selected.readonly:
            self._selected = None
            return ResponseOk(cmd.tag, cmd.command + b" completed."), None
        return await super().do_close(cmd)

    async def do_fetch(self, cmd: FetchCommand) -> tuple[CommandResponse, Any]:
        """pymap's FETCH, without inventing empty content for an expunged message.

        A message another session expunged stays in this session's view until the expunge
        is announced (RFC 9051 §7.5.1 forbids EXPUNGE responses during FETCH). Its flags and
        UID are still known, but its file is gone: pymap answered OK with `BODY[] ""`,
        which a client caches as the message. Here, as in Dovecot, a FETCH that needs the
        content of such a message leaves it out and answers NO [EXPUNGEISSUED] (RFC 5530
        §3); the expunge is announced by the next command that may (NOOP, for one).
        """
        changed_since: int | None = None
        want_vanished = False
        for name, arg in cmd.options.options.items():
            if name == b"VANISHED" and not arg.value:
                want_vanished = True
                continue
            if name != b"CHANGEDSINCE" or len(arg.value) != 1:
                return ResponseBad(cmd.tag, b"Unsupported FETCH modifier."), None
            try:
                changed_since = modseq_value(bytes(arg.value[0]))
            except ValueError:
                return ResponseBad(cmd.tag, b"Invalid CHANGEDSINCE value."), None
        if want_vanished and not (cmd.uid and changed_since is not None and qresync_enabled.get()):
            # RFC 7162 §3.2.6: UID FETCH only, with CHANGEDSINCE, once QRESYNC is enabled.
            return ResponseBad(cmd.tag, b"VANISHED needs UID FETCH, CHANGEDSINCE, QRESYNC."), None
        attributes = list(cmd.attributes)
        first_enable: list[UntaggedResponse] = []
        if changed_since is not None or MODSEQ_ATTR in attributes:
            first_enable = await self._condstore_on()
        if (
            condstore_enabled.get()
            and MODSEQ_ATTR not in attributes
            and (changed_since is not None or any(a.value == b"FLAGS" for a in attributes))
        ):
            # RFC 7162 §3.1.4.1 (CHANGEDSINCE), §3.2: MODSEQ goes with FLAGS once enabled.
            attributes.append(MODSEQ_ATTR)
        if not cmd.uid:
            self.selected.hide_expunged = True
        set_seen = not self.selected.readonly and any(attr.set_seen for attr in attributes)
        messages, updates = await self.session.fetch_messages(
            self.selected, cmd.sequence_set, set_seen
        )
        if changed_since is not None:
            messages = [(seq, msg) for seq, msg in messages if modseq_of(msg) > changed_since]
        if want_vanished and changed_since is not None:
            session = cast(MailplaneSession, self.session)
            selected = self.selected
            asked = cmd.sequence_set.flatten(max(session.selected_uids(selected)[1] - 1, 1))
            modseqs = session.selected_modseqs(selected)
            gone = self._vanished_since(modseqs, changed_since, frozenset(asked), selected)
            if gone:
                first_enable.append(vanished_response(gone, earlier=True))
        requirement = FetchRequirement.reduce(attr.requirement for attr in attributes)
        needs_content = not requirement.has_none(FetchRequirement.CONTENT)
        response: CommandResponse = ResponseOk(cmd.tag, cmd.command + b" completed.")
        untagged = []
        for msg_seq, msg in messages:
            if needs_content and (msg.expunged or not message_content_exists(msg)):
                response = ResponseNo(
                    cmd.tag,
                    b"Some of the requested messages no longer exist.",
                    ResponseCode.of(b"EXPUNGEISSUED"),
                )
                continue
            if msg.expunged:
                response.code = ResponseCode.of(b"EXPUNGEISSUED")
            msg_attrs = MessageAttributes(msg, self.selected, attributes)
            untagged.append(FetchResponse(msg_seq, msg_attrs, writing_hook=msg_attrs.load_hook()))
        response.add_untagged(*first_enable, *untagged)
        return response, updates

    # -- CONDSTORE (RFC 7162; storage in imap/modseq.py, parsing in imap/condstore.py) -----

    async def _condstore_on(self) -> list[UntaggedResponse]:
        """Enable CONDSTORE for this connection; the HIGHESTMODSEQ its first use owes.

        RFC 7162 §3.1: a CONDSTORE-enabling command given with a mailbox selected, when
        CONDSTORE was not yet on, is answered with `* OK [HIGHESTMODSEQ n]` first.
        """
        if condstore_enabled.get():
            return []
        condstore_enabled.set(True)
        self._enabled.add(b"CONDSTORE")
        if self._selected is None:
            return []
        return [highest_modseq_response(await self._highest_modseq())]

    async def _resync(self, response: CommandResponse, selected: Any, resync: QresyncParams) -> Any:
        """SELECT (QRESYNC ...) (RFC 7162 §3.2.5): what changed since the client's state.

        Nothing is sent for a UIDVALIDITY that is not the mailbox's (the client must then
        resynchronise from scratch). Otherwise: VANISHED (EARLIER) with the UIDs expunged
        since the client's mod-sequence, then FETCH (UID FLAGS MODSEQ) of every message
        changed since, both limited to the client's known UIDs when it gave them. The
        seq-match-data is accepted and not needed: expunges are remembered by UID.
        """
        session = cast(MailplaneSession, self.session)
        if resync.uid_validity != session.selected_uids(selected)[0]:
            return selected
        modseqs = session.selected_modseqs(selected)
        vanished = self._vanished_since(modseqs, resync.modseq, resync.known_uids, selected)
        if vanished:
            response.add_untagged(vanished_response(vanished, earlier=True))
        messages, selected = await self.session.fetch_messages(
            selected, SequenceSet.all(uid=True), False
        )
        attributes = [_UID_ATTR, _FLAGS_ATTR, MODSEQ_ATTR]
        for seq, msg in messages:
            if modseq_of(msg) <= resync.modseq:
                continue
            if resync.known_uids is not None and msg.uid not in resync.known_uids:
                continue
            response.add_untagged(FetchResponse(seq, MessageAttributes(msg, selected, attributes)))
        return selected

    def _vanished_since(
        self, modseqs: Any, since: int, within: frozenset[int] | None, selected: Any
    ) -> list[int]:
        """UIDs expunged after mod-sequence `since` (RFC 7162 §3.2.5.2, §3.2.6).

        Where the log no longer holds every expunge that old (`floor`), every UID below
        UIDNEXT that no message has is reported: VANISHED (EARLIER) may name UIDs the
        client never saw, and clients ignore those (§3.2.10).
        """
        if since >= modseqs.floor:
            gone = [uid for uid, value in modseqs.expunged.items() if value > since]
        else:
            existing = set(selected.messages._uids)
            next_uid = cast(MailplaneSession, self.session).selected_uids(selected)[1]
            gone = [uid for uid in range(1, next_uid) if uid not in existing]
        if within is not None:
            gone = [uid for uid in gone if uid in within]
        return sorted(gone)

    async def _highest_modseq(self, name: str | None = None) -> int:
        session = cast(MailplaneSession, self.session)
        if name is None:
            return session.selected_modseqs(self.selected).highest
        return await session.highest_modseq(name)

    async def do_status(self, cmd: StatusCommand) -> tuple[CommandResponse, Any]:
        """pymap's STATUS, with HIGHESTMODSEQ (RFC 7162 §3.1.2.1) when asked."""
        if not any(attr.value == b"HIGHESTMODSEQ" for attr in cmd.status_list):
            return await super().do_status(cmd)
        response, updates = await super().do_status(cmd)
        highest = await self._highest_modseq(cmd.mailbox)
        for untagged in response._untagged:
            if isinstance(untagged, StatusResponse):
                data = dict(untagged.data)
                for attr in cmd.status_list:
                    if attr.value == b"HIGHESTMODSEQ":
                        data[attr] = Number(highest)
                untagged.data = {attr: data[attr] for attr in cmd.status_list if attr in data}
        return response, updates

    async def do_store(self, cmd: StoreCommand) -> tuple[CommandResponse, Any]:
        """pymap's STORE, with UNCHANGEDSINCE (RFC 7162 §3.1.3) and MODSEQ in its answers.

        Messages whose mod-sequence is above the UNCHANGEDSINCE value are left alone and
        listed in `OK [MODIFIED set]`. The check and the change are two steps: a change
        another session makes between them is not detected (the window is one command).
        With CONDSTORE on, FETCH responses carry MODSEQ; with .SILENT they are sent (as
        MODSEQ alone) only for the messages whose mod-sequence changed.
        """
        unchanged_since: int | None = None
        for name, arg in cmd.options.options.items():
            if name != b"UNCHANGEDSINCE" or len(arg.value) != 1:
                return ResponseBad(cmd.tag, b"Unsupported STORE modifier."), None
            try:
                unchanged_since = modseq_value(bytes(arg.value[0]))
            except ValueError:
                return ResponseBad(cmd.tag, b"Invalid UNCHANGEDSINCE value."), None
        first_enable: list[UntaggedResponse] = []
        if unchanged_since is not None:
            first_enable = await self._condstore_on()
        if not condstore_enabled.get():
            return await super().do_store(cmd)
        if not cmd.uid:
            self.selected.hide_expunged = True
        current, _ = await self.session.fetch_messages(self.selected, cmd.sequence_set, False)
        before = {msg.uid: modseq_of(msg) for _seq, msg in current}
        modified: list[int] = []
        sequence_set: SequenceSet | None = cmd.sequence_set
        if unchanged_since is not None:
            allowed = [uid for uid, value in before.items() if value <= unchanged_since]
            modified = [
                msg.uid if cmd.uid else seq
                for seq, msg in current
                if before[msg.uid] > unchanged_since
            ]
            sequence_set = SequenceSet.build(allowed, True) if allowed else None
        if cmd.silent:
            self.selected.silence(cmd.sequence_set, cmd.flag_set, cmd.mode)
        messages: Iterable[tuple[int, Any]] = []
        updates = None
        if sequence_set is not None:
            messages, updates = await self.session.update_flags(
                self.selected, sequence_set, cmd.flag_set, cmd.mode
            )
        if modified:
            text = b"Conditional STORE failed."
            code = ResponseCode.of(b"MODIFIED %b" % bytes(SequenceSet.build(modified, cmd.uid)))
            response = ResponseOk(cmd.tag, text, code)
        else:
            response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        response.add_untagged(*first_enable)
        session_flags = self.selected.session_flags
        for seq, msg in messages:
            if msg.expunged:
                response.code = ResponseCode.of(b"EXPUNGEISSUED")
                continue
            value = FetchValue.of(MODSEQ_ATTR, List([Number(modseq_of(msg))]))
            data: list[FetchValue] = []
            if not cmd.silent:
                flags = List(msg.get_flags(session_flags), sort=True)
                data.append(FetchValue.of(_FLAGS_ATTR, flags))
            elif modseq_of(msg) == before.get(msg.uid):
                continue  # silent, and nothing changed
            data.append(value)
            if cmd.uid:
                data.append(FetchValue.of(_UID_ATTR, Number(msg.uid)))
            response.add_untagged(FetchResponse(seq, data))
        return response, updates

    # -- extensions (parsing in imap/extensions.py) ---------------------------------------

    async def do_enable(self, cmd: EnableCommand) -> tuple[CommandResponse, Any]:
        """ENABLE (RFC 5161 §3.1): only before a mailbox is selected; unknown names ignored.

        CONDSTORE is the only one that can be enabled here; `* ENABLED` lists what the
        command enabled, so a client never assumes an extension it asked for is on.
        """
        if self._selected is not None:
            return ResponseBad(cmd.tag, b"ENABLE is only valid before SELECT."), None
        offered = set(self.capability.capabilities) & ENABLEABLE
        enabled = [name for name in cmd.capabilities if name in offered]
        self._enabled.update(enabled)
        if b"QRESYNC" in enabled:
            qresync_enabled.set(True)  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
        if b"CONDSTORE" in enabled or b"QRESYNC" in enabled:
            await self._condstore_on()
        response = ResponseOk(cmd.tag, b"ENABLE completed.")
        response.add_untagged(UntaggedResponse(b" ".join([b"ENABLED", *enabled])))
        return response, None

    async def do_search(self, cmd: SearchCommand) -> tuple[CommandResponse, Any]:
        """pymap's SEARCH; with RETURN options (RFC 4731 §3.1) one ESEARCH response instead.

        MIN, MAX and ALL are left out when nothing matched; COUNT is then 0. ALL is a
        sequence set in as few ranges as possible (RFC 4731 §3.1, `SequenceSet.build`).
        """
        returns = getattr(cmd, "returns", None)
        uses_modseq = search_uses_modseq(cmd.keys)
        first_enable = await self._condstore_on() if uses_modseq else []
        if not cmd.uid:
            self.selected.hide_expunged = True
        messages, updates = await self.session.search_mailbox(self.selected, cmd.keys)
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        response.add_untagged(*first_enable)
        found: list[int] = []
        modseqs: dict[int, int] = {}
        for seq, msg in messages:
            if msg.expunged:
                response.code = ResponseCode.of(b"EXPUNGEISSUED")
            number = msg.uid if cmd.uid else seq
            found.append(number)
            modseqs[number] = modseq_of(msg)
        if returns is None:
            # RFC 7162 §3.1.5: with a MODSEQ key, "(MODSEQ n)" ends a non-empty answer.
            text = b" ".join([b"SEARCH", *(b"%d" % n for n in found)])
            if uses_modseq and found:
                text += b" (MODSEQ %d)" % max(modseqs.values())
            response.add_untagged(UntaggedResponse(text))
            return response, updates
        data: dict[bytes, bytes] = {}
        reported: list[int] = []
        if found:
            if b"MIN" in returns:
                data[b"MIN"] = b"%d" % min(found)
                reported.append(min(found))
            if b"MAX" in returns:
                data[b"MAX"] = b"%d" % max(found)
                reported.append(max(found))
            if b"ALL" in returns:
                data[b"ALL"] = bytes(SequenceSet.build(found, cmd.uid))
        if b"COUNT" in returns:
            data[b"COUNT"] = b"%d" % len(found)
        if uses_modseq and found:
            # RFC 7162 §3.2 (ESEARCH): the highest mod-sequence of the messages the answer
            # reports: all of them for ALL or COUNT, else those MIN and MAX name.
            counted = found if returns & {b"ALL", b"COUNT"} else reported
            data[b"MODSEQ"] = b"%d" % max(modseqs[n] for n in counted)
        # pymap's ESearchResponse leaves out the "ESEARCH" keyword itself (RFC 4731 §3.1).
        words = [b'ESEARCH (TAG "%b")' % cmd.tag, *([b"UID"] if cmd.uid else [])]
        words += [b"%b %b" % item for item in data.items()]
        response.add_untagged(UntaggedResponse(b" ".join(words)))
        return response, updates

    async def _sort_items(self, cmd: SortCommand | ThreadCommand) -> tuple[list[SortItem], Any]:
        """The messages the command's search keys match, with what SORT and THREAD read."""
        if not cmd.uid:
            self.selected.hide_expunged = True
        messages, updates = await self.session.search_mailbox(self.selected, cmd.keys)
        items = []
        for seq, msg in messages:
            loaded = await msg.load_content(FetchRequirement.HEADER)
            header = bytes(loaded.get_message_headers())
            items.append(SortItem(seq, msg.uid, msg.internal_date, loaded.get_size(), header))
        return items, updates

    async def _off_loop(self, func: Any, *args: Any) -> Any:
        config = cast(MailplaneConfig, self.config)
        return await asyncio.get_running_loop().run_in_executor(config.search_executor, func, *args)

    async def do_sort(self, cmd: SortCommand) -> tuple[CommandResponse, Any]:
        """SORT and UID SORT (RFC 5256 §3): one `* SORT` response, numbers in order."""
        items, updates = await self._sort_items(cmd)
        ordered = await self._off_loop(sort_items, items, cmd.program)
        numbers = [b"%d" % (item.uid if cmd.uid else item.seq) for item in ordered]
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        response.add_untagged(UntaggedResponse(b" ".join([b"SORT", *numbers])))
        return response, updates

    async def do_thread(self, cmd: ThreadCommand) -> tuple[CommandResponse, Any]:
        """THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3, response syntax §4)."""
        items, updates = await self._sort_items(cmd)
        algorithm = (
            references_threads if cmd.algorithm == b"REFERENCES" else ordered_subject_threads
        )
        threads = await self._off_loop(algorithm, items)
        number = (lambda item: item.uid) if cmd.uid else (lambda item: item.seq)
        parts = [b"(%b)" % thread_text(thread, number) for thread in threads]
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        text = b"THREAD " + b"".join(parts) if parts else b"THREAD"
        response.add_untagged(UntaggedResponse(text))
        return response, updates

    async def do_list(self, cmd: ListCommand) -> tuple[CommandResponse, Any]:
        """LIST; the extended forms (RFC 5258, LIST-STATUS RFC 5819) answered here.

        RFC 5819 §2: the STATUS response of a listed mailbox follows its LIST response;
        mailboxes that cannot be selected get none.
        """
        if not isinstance(cmd, ExtendedListCommand) or not cmd.extended:
            return await super().do_list(cmd)
        session = cast(MailplaneSession, self.session)
        listed = await session.list_extended(
            cmd.ref_name, cmd.patterns, select=cmd.select, returns=cmd.returns
        )
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        for entry in listed:
            response.add_untagged(
                ExtendedListResponse(entry.name, entry.delimiter, entry.attributes, entry.childinfo)
            )
            if cmd.status and entry.selectable:
                status = await self._status_of(entry.name, cmd.status)
                if status is not None:
                    response.add_untagged(status)
        updates = None
        if self._selected is not None:
            updates = await self.session.check_mailbox(self.selected)
        return response, updates

    async def _status_of(self, name: str, items: tuple[bytes, ...]) -> StatusResponse | None:
        try:
            mailbox, _updates = await self.session.get_mailbox(name)
        except MailboxError:
            return None  # deleted since the listing
        values = {
            b"MESSAGES": mailbox.exists,
            b"RECENT": mailbox.recent,
            b"UIDNEXT": mailbox.next_uid,
            b"UIDVALIDITY": mailbox.uid_validity,
            b"UNSEEN": mailbox.unseen,
        }
        if b"HIGHESTMODSEQ" in items:
            values[b"HIGHESTMODSEQ"] = await self._highest_modseq(name)
        if self._selected is not None and self._selected.mailbox_id == mailbox.mailbox_id:
            values[b"RECENT"] = self._selected.session_flags.recent
        data: dict[StatusAttribute, Any] = {
            StatusAttribute(item): Number(values[item]) for item in items
        }
        return StatusResponse(name, data)

    async def do_command(self, cmd: Command) -> CommandResponse:
        """pymap's dispatch; what it leaves unanswered becomes a tagged NO, not a BYE."""
        if isinstance(cmd, InvalidCommand) and isinstance(cmd.parse_exc, CharsetRefused):
            # RFC 9051 §6.4.4, RFC 5256 §3: NO [BADCHARSET (the ones we support)].
            return ResponseNo(
                cmd.tag,
                b"Unsupported charset.",
                ResponseCode.of(b"BADCHARSET (%b)" % b" ".join(SUPPORTED_CHARSETS)),
            )
        try:
            response = await super().do_command(cmd)
            if not isinstance(response, ResponseBye):
                response._untagged[:0] = self._keyword_announcements()
            return response
        except (ResponseError, AuthenticationError, TimeoutError, ConnectionError, EOFError):
            raise  # pymap's loop answers these itself
        except DomainError as exc:
            return DomainErrorResponse(cmd.tag, exc)  # a service refused: its own answer
        except UnsafeFolderPath as exc:
            # The storage layer refused a path the name checks let through: a bug, but
            # nothing was touched.
            log.error("imap %s refused by storage: %s", cmd.command.decode(), exc)
            return ResponseNo(cmd.tag, b"Invalid mailbox name.", ResponseCode.of(b"CANNOT"))
        except RecursionError:
            return ResponseBad(cmd.tag, b"Command nested too deeply.")
        except Exception:
            log.exception("imap command %s failed", cmd.command.decode(errors="replace"))
            return ResponseNo(cmd.tag, b"Unexpected server error.", ResponseCode.of(b"SERVERBUG"))


class MailplaneConnection(IMAPConnection):
    """pymap's connection loop with timeouts and input limits."""

    __slots__ = ["_bye_sent", "_state"]

    def __init__(self, *args: object, state: MailplaneConnectionState) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._state = state
        self._bye_sent = False

    @property
    def _config(self) -> MailplaneConfig:
        assert isinstance(self.config, MailplaneConfig)
        return self.config

    def _timeout(self) -> float:
        if self._state.authenticated:
            return self._config.authenticated_timeout
        return self._config.unauthenticated_timeout

    def _literal_max(self) -> int:
        if self._state.authenticated:
            return self._config.parsing_params.max_append_len or PRE_AUTH_LITERAL_MAX
        return PRE_AUTH_LITERAL_MAX

    async def write_response(self, resp: Response) -> None:
        """pymap's, writing a long answer in batches with a turn for other clients between.

        pymap writes each untagged response of a command separately (one TLS record and one
        send each: STORE or FETCH over 3,000 messages was 3,000 of them in one loop step)
        and then serialises the whole answer a second time for its debug log, whether or
        not debug logging is on. Here `WRITE_BATCH` responses go out as one write, and the
        loop serves other connections between batches.
        """
        if not isinstance(resp, CommandResponse) or len(resp._untagged) <= WRITE_BATCH:
            await self._write_whole(resp)
            return
        writer = self.writer
        try:
            buffer = io.BytesIO()
            for count, untagged in enumerate(resp._untagged, 1):
                await untagged.async_write(buffer)
                if count % WRITE_BATCH == 0:
                    writer.write(buffer.getvalue())
                    buffer = io.BytesIO()
                    await writer.drain()
                    await asyncio.sleep(0)
            Response.write(resp, buffer)  # the tagged line alone
            writer.write(buffer.getvalue())
            await writer.drain()
        except ConnectionError:
            pass

    async def _write_whole(self, resp: Response) -> None:
        try:
            buffer = io.BytesIO()
            await resp.async_write(buffer)
            self.writer.write(buffer.getvalue())
            await self.writer.drain()
        except ConnectionError:
            pass
        else:
            if _PYMAP_LOG.isEnabledFor(logging.DEBUG):
                self._print("%s <--| %s", bytes(resp))

    async def _bye(self, text: bytes, code: bytes | None = None) -> _ByeSent:
        self._bye_sent = True
        await self.write_response(ResponseBye(text, ResponseCode.of(code) if code else None))
        return _ByeSent()

    async def read_command(self, state: ConnectionState) -> Command:
        # pymap's read_command, with input that would crash its parser answered BAD.
        line = await self.readline()
        conts: list[memoryview] = []
        while True:
            params = self.params.copy(ParsingState(continuations=conts))
            if nesting_depth(bytes(line)) > MAX_NESTING:
                return _refused(line, params, b"Command nested too deeply.")
            try:
                cmd, _ = self.commands.parse(line, params)
            except ParsingInterrupt as interrupt:
                await self._interrupt(state, interrupt, conts)
            except RecursionError:  # deep nesting inside a literal's continuation
                return _refused(line, params, b"Command nested too deeply.")
            except UnicodeError:  # e.g. a mailbox name that is not valid modified UTF-7
                return _refused(line, params, b"Invalid modified UTF-7 in a mailbox name.")
            except Exception:
                log.exception("imap parser failed")
                return _refused(line, params, b"Unparseable command.")
            else:
                return cmd

    async def readline(self) -> memoryview:
        try:
            async with asyncio.timeout(self._timeout()):
                return await self._readline()
        except TimeoutError:
            raise await self._bye(b"Autologout; idle for too long.") from None
        except ValueError:  # StreamReader's line limit (64 KiB) was exceeded
            raise await self._bye(b"Line too long.", b"TOOBIG") from None

    async def _readline(self) -> memoryview:
        # pymap's readline, plus a size check before reading a {n+} literal.
        buf = bytearray(await self.reader.readline())
        while True:
            if not buf.endswith(b"\n"):
                raise EOFError()
            lit_plus = (
                self._literal_plus.search(buf) if buf.endswith((b"+}\n", b"+}\r\n")) else None
            )
            if lit_plus is None:
                self._print("%s -->| %s", cast(bytes, buf))  # logged only in debug
                return memoryview(buf)
            length = int(lit_plus.group(1))
            if length > self._literal_max():
                # RFC 7888 §4: a non-synchronizing literal cannot be refused before its bytes
                # arrive, so the server ends the connection (TOOBIG, RFC 4469 §4).
                raise await self._bye(b"Literal too large.", b"TOOBIG")
            buf += await self.reader.readexactly(length)
            buf += await self.reader.readline()

    async def read_continuation(self, literal_length: int) -> memoryview:
        try:
            async with asyncio.timeout(self._timeout()):
                return await super().read_continuation(literal_length)
        except TimeoutError:
            # A literal that promised more bytes than it sent ends here.
            raise await self._bye(b"Autologout; idle for too long.") from None

    async def send_error_disconnect(self) -> None:
        if not self._bye_sent:
            await super().send_error_disconnect()


class MailplaneIMAPServer(IMAPServer):
    """pymap's connection factory, building our connection and state classes."""

    __slots__ = ["implicit_tls"]

    def __init__(self, login: Login, config: MailplaneConfig, *, implicit_tls: bool) -> None:
        super().__init__(login, config)
        self.implicit_tls = implicit_tls

    async def __call__(
        self, reader: StreamReader, writer: StreamWriter, sock_info: SocketInfo
    ) -> None:
        assert isinstance(self._login, Login) and isinstance(self._config, MailplaneConfig)
        state = MailplaneConnectionState(self._login, self._config, implicit_tls=self.implicit_tls)
        conn = MailplaneConnection(
            self.commands, self._config, reader, writer, sock_info, state=state
        )
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(conn))
            try:
                await conn.run(state)
            except Exception:
                # pymap already said BYE [SERVERBUG]; keep serving everyone else.
                log.exception("imap connection %s failed", socket_info.get())


@dataclass(slots=True)
class Listening:
    """Where the listeners ended up (port 0 in tests picks a free port)."""

    tls_address: tuple[str, int] | None
    starttls_address: tuple[str, int] | None
    backend: MailplaneBackend


@asynccontextmanager
async def imap_listen(
    *,
    host: str,
    tls_port: int | None,
    starttls_port: int | None,
    ssl_context: ssl.SSLContext,
    storage_root: str,
    **config_overrides: Any,
) -> AsyncIterator[Listening]:
    """Start the IMAP listeners on the running loop; stop them on exit."""
    config = MailplaneConfig.build(
        storage_root=storage_root, host=host, ssl_context=ssl_context, **config_overrides
    )
    config.apply_context()  # pymap's subsystem context variable, inherited by connections
    backend = MailplaneBackend(Login(config), config)
    servers: list[asyncio.Server] = []
    tls_address = starttls_address = None
    async with AsyncExitStack() as stack:
        await backend.start(stack)
        pp_reader = ProxyProtocolReader(config.proxy_protocol)
        if tls_port is not None:
            callback = pp_reader.get_callback(
                MailplaneIMAPServer(backend.login, config, implicit_tls=True)
            )
            server: asyncio.Server = await asyncio.start_server(
                callback,
                host=host,
                port=tls_port,
                ssl=ssl_context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
                backlog=1024,
            )
            servers.append(server)
            tls_address = server.sockets[0].getsockname()[:2]
        if starttls_port is not None:
            callback = pp_reader.get_callback(
                MailplaneIMAPServer(backend.login, config, implicit_tls=False)
            )
            server = await asyncio.start_server(
                callback, host=host, port=starttls_port, backlog=1024
            )
            servers.append(server)
            starttls_address = server.sockets[0].getsockname()[:2]
        try:
            yield Listening(tls_address, starttls_address, backend)
        finally:
            for server in servers:
                server.close()
