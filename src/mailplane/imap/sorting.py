"""SORT and THREAD=ORDEREDSUBJECT (RFC 5256): sort keys from a message's header, and the order.

Kept apart from the protocol classes so the rules read as the RFC writes them and can be
tested without a server. Everything here is pure and runs on the search pool: a SORT over a
large mailbox parses every matching message's header, which must not hold the event loop.

Header values are read with the stdlib's compat32 parser, which never raises on malformed
input (a SORT must answer for a mailbox full of spam, not fail on one message).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import NamedTuple

__all__ = [
    "SORT_KEYS",
    "SortItem",
    "base_subject",
    "ordered_subject_threads",
    "references_threads",
    "sort_items",
    "thread_text",
]

# RFC 5256 §3: the sort keys a client may name (each optionally preceded by REVERSE).
SORT_KEYS = frozenset({b"ARRIVAL", b"CC", b"DATE", b"FROM", b"SIZE", b"SUBJECT", b"TO"})

_PARSER = BytesHeaderParser(policy=compat32)
_WSP_RUN = re.compile(r"[ \t\r\n]+")
# RFC 5256 §5 ABNF: subj-trailer = "(fwd)" / WSP; subj-blob = "[" *BLOBCHAR "]" *WSP;
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"; subj-leader = (*subj-blob
# subj-refwd) / WSP; subj-fwd-hdr = "[fwd:"; subj-fwd-trl = "]".
_TRAILER = re.compile(r"(?:\(fwd\)| )$", re.IGNORECASE)
_LEADER = re.compile(r"^(?:(?:\[[^\[\]]*\] *)*(?:re|fwd?) *(?:\[[^\[\]]*\] *)?:| )", re.IGNORECASE)
_BLOB = re.compile(r"^\[[^\[\]]*\] *")
_FWD = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)


def _decoded(value: str) -> str:
    """An unstructured header value with RFC 2047 encoded-words decoded (best effort)."""
    try:
        parts = decode_header(value)
    except Exception:  # a malformed encoded-word: the raw text is what the client sees
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "ascii", "replace"))
        except LookupError:  # an unknown charset name in the encoded-word
            out.append(chunk.decode("ascii", "replace"))
    # decode_header drops the white space between a plain word and an encoded word.
    return "".join(out) if len(parts) > 1 else (out[0] if out else "")


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1: the base subject, the text SORT SUBJECT and THREAD group by."""
    return base_subject_reply(subject)[0]


def base_subject_reply(subject: str) -> tuple[str, bool]:
    """The base subject, and whether extracting it removed a reply or forward marker.

    RFC 5256 §2.1: a "(fwd)" trailer (2), a "Re:"/"Fwd:" leader (3) or a "[fwd: ]"
    wrapper (6) make the message a reply or forward, which THREAD=REFERENCES uses when
    it merges threads by subject (§3 step 6).
    """
    # (1) encoded words decoded by the caller; runs of white space become one space.
    text = _WSP_RUN.sub(" ", subject)
    reply = False
    while True:
        # (2) remove trailers: "(fwd)" and white space at the end, repeatedly.
        while True:
            stripped = _TRAILER.sub("", text)
            if stripped == text:
                break
            reply = reply or not text.endswith(" ")
            text = stripped
        # (3)-(5) remove leaders ("Re:", "Fwd:", "[blob] re:") and a leading blob when
        # something remains after it, until neither applies.
        while True:
            before = text
            while True:
                stripped = _LEADER.sub("", text, count=1)
                if stripped == text:
                    break
                reply = reply or not text.startswith(" ")
                text = stripped
            blob = _BLOB.match(text)
            if blob is not None and text[blob.end() :].strip():
                text = text[blob.end() :]
            if text == before:
                break
        # (6) "[fwd: ... ]" around the whole subject: unwrap and start again at (2).
        forwarded = _FWD.match(text)
        if forwarded is None:
            return text, reply
        reply = True
        text = forwarded.group(1)


def _first_mailbox(values: Sequence[str] | None) -> str:
    """RFC 5256 §3 FROM/TO/CC: the addr-mailbox (local part) of the first address.

    When the header starts with a group ("team: a@x, b@y;"), the first address of the
    IMAP address list is the group's start marker, whose addr-mailbox is the group's name
    (RFC 9051 §7.5.2 ENVELOPE), as Dovecot sorts it.
    """
    if not values:
        return ""
    group = _GROUP.match(str(values[0]))
    if group is not None:
        return group.group(1).strip().strip('"')
    for _name, address in getaddresses([str(v) for v in values]):
        if address:
            return address.rpartition("@")[0] if "@" in address else address
    return ""


# A display name then ":" before any "@", "<" or ",": RFC 5322 §3.4 group syntax.
_GROUP = re.compile(r'\s*((?:"[^"]*"|[^:@<>,"()])+):')


def _unicode_casemap(text: str) -> str:
    """i;unicode-casemap (RFC 5051 §2): titlecase each character, then NFKD.

    RFC 5256 §2.1 compares base subjects with it; upper-casing (not folding to lower
    case) is what puts "[" and "_" after the letters, as Dovecot and imaptest do.
    """
    return unicodedata.normalize("NFKD", "".join(char.title() for char in text))


def _ascii_casemap(text: str) -> str:
    """i;ascii-casemap (RFC 4790 §9.2): ASCII letters compared without case."""
    return text.translate(_ASCII_UPPER)


_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


class HeaderFields(NamedTuple):
    """Sort values from the header, named as the SORT keys are."""

    FROM: str
    TO: str
    CC: str
    SUBJECT: str
    DATE: float


@dataclass(slots=True)
class SortItem:
    """One message as SORT and THREAD see it."""

    seq: int
    uid: int
    internal_date: datetime
    size: int
    header: bytes

    def fields(self) -> HeaderFields:
        """The header-derived sort values (parse once per message and command)."""
        return self.fields_from(_PARSER.parsebytes(self.header))

    def fields_from(self, parsed: Message) -> HeaderFields:
        return HeaderFields(
            FROM=_ascii_casemap(_first_mailbox(parsed.get_all("from"))),
            TO=_ascii_casemap(_first_mailbox(parsed.get_all("to"))),
            CC=_ascii_casemap(_first_mailbox(parsed.get_all("cc"))),
            SUBJECT=_unicode_casemap(base_subject(_decoded(str(parsed.get("subject", ""))))),
            DATE=self._sent_date(parsed.get("date")),
        )

    def _sent_date(self, value: object) -> float:
        """RFC 5256 §2.2: the Date header in UTC, or INTERNALDATE if it is missing or bad."""
        if value is not None:
            try:
                sent = parsedate_to_datetime(str(value))
            except (TypeError, ValueError, IndexError, OverflowError):
                sent = None
            if sent is not None:
                if sent.tzinfo is None:
                    sent = sent.replace(tzinfo=UTC)
                try:
                    return sent.timestamp()
                except (OverflowError, ValueError, OSError):
                    pass
        return _timestamp(self.internal_date)


def _timestamp(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def sort_items(items: Sequence[SortItem], program: Sequence[tuple[bytes, bool]]) -> list[SortItem]:
    """Messages in the order of `program` ((key, reverse) pairs), RFC 5256 §3.

    Ties under every key keep mailbox order (sequence numbers). Python's sort is stable
    (also with reverse=True), so sorting by the last key first and the first key last
    gives the lexicographic order the RFC asks for.
    """
    ordered = sorted(items, key=lambda item: item.seq)
    needs_header = any(key not in (b"ARRIVAL", b"SIZE") for key, _ in program)
    fields = {id(item): item.fields() for item in ordered} if needs_header else {}
    for key, reverse in reversed(program):
        if key == b"ARRIVAL":
            ordered.sort(key=lambda item: _timestamp(item.internal_date), reverse=reverse)
        elif key == b"SIZE":
            ordered.sort(key=lambda item: item.size, reverse=reverse)
        else:
            name = key.decode("ascii")
            ordered.sort(key=lambda item: getattr(fields[id(item)], name), reverse=reverse)
    return ordered


def ordered_subject_threads(items: Sequence[SortItem]) -> list[ThreadNode]:
    """RFC 5256 §3 THREAD=ORDEREDSUBJECT: threads by base subject, each by sent date.

    Messages are sorted by (base subject, sent date, sequence); each run with one base
    subject is a thread whose first message is the parent of all the others; threads are
    ordered by the sent date of their first message (ties: its sequence number).
    """
    fields = {id(item): item.fields() for item in items}

    def order(item: SortItem) -> tuple[str, float, int]:
        values = fields[id(item)]
        return (values.SUBJECT, values.DATE, item.seq)

    threads: list[list[SortItem]] = []
    last: str | None = None
    for item in sorted(items, key=order):
        subject = fields[id(item)].SUBJECT
        if threads and subject == last:
            threads[-1].append(item)
        else:
            threads.append([item])
            last = subject
    threads.sort(key=lambda thread: (fields[id(thread[0])].DATE, thread[0].seq))
    return [
        ThreadNode(thread[0], [ThreadNode(item, []) for item in thread[1:]]) for thread in threads
    ]


# -- THREAD=REFERENCES (RFC 5256 §3) ------------------------------------------------------

_MSG_ID = re.compile(r"<([^<>\s]+)>")


def _message_ids(value: object) -> list[str]:
    return _MSG_ID.findall(str(value)) if value is not None else []


class _Node:
    """A container of the REFERENCES algorithm: a message, or a dummy (`item` None)."""

    __slots__ = ("children", "date", "item", "parent")

    def __init__(self) -> None:
        self.item: SortItem | None = None
        self.parent: _Node | None = None
        self.children: list[_Node] = []
        self.date = 0.0

    def has_ancestor(self, other: _Node) -> bool:
        """Whether `other` is this node or above it: linking `other` under it would loop.

        A node without children can be nobody's ancestor but its own: the common case (a
        new message replying to an older one) costs nothing instead of a walk to the root.
        """
        if self is not other and not other.children:
            return False
        node: _Node | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link_under(self, parent: _Node) -> None:
        self.unlink()
        self.parent = parent
        parent.children.append(self)


@dataclass(slots=True)
class ThreadNode:
    """A thread in THREAD's answer: a message (`item`) or a dummy (None) with children."""

    item: SortItem | None
    children: list[ThreadNode]


def references_threads(items: Sequence[SortItem]) -> list[ThreadNode]:
    """RFC 5256 §3 THREAD=REFERENCES: the JWZ algorithm with the RFC's steps and tie-breaks.

    Steps as the RFC numbers them: (1) containers linked by References (In-Reply-To when
    it has none), never into a loop; a message's own references replace any parent an
    earlier message presumed for it (even when the new link is refused as a loop, as
    Dovecot does); (2) roots; (4) dummies pruned; (5) roots sorted by sent date; (6) roots
    merged by base subject; (7) siblings sorted by sent date (ties: sequence number).
    """
    table: dict[str, _Node] = {}
    subjects: dict[int, tuple[str, bool]] = {}
    nodes: list[_Node] = []
    for item in sorted(items, key=lambda i: i.seq):
        parsed = _PARSER.parsebytes(item.header)
        subject, replied = base_subject_reply(_decoded(str(parsed.get("subject", ""))))
        subjects[item.seq] = (_unicode_casemap(subject), replied)
        own = _message_ids(parsed.get("message-id"))
        # (1A) a missing or duplicate Message-ID: the message is unique anyway.
        if own and own[0] in table and table[own[0]].item is None:
            node = table[own[0]]
        else:
            node = _Node()
            if own and own[0] not in table:
                table[own[0]] = node
        node.item = item
        node.date = item.fields_from(parsed).DATE
        nodes.append(node)
        refs = _message_ids(parsed.get("references"))
        if not refs:
            refs = _message_ids(parsed.get("in-reply-to"))[:1]
        # (1B) link the references in order, parent before child, where not yet linked.
        previous: _Node | None = None
        for ref in refs:
            ref_node = table.get(ref)
            if ref_node is None:
                ref_node = table[ref] = _Node()
            if (
                previous is not None
                and ref_node.parent is None
                and ref_node is not previous
                and not previous.has_ancestor(ref_node)
            ):
                ref_node.link_under(previous)
            previous = ref_node
        # (1C) this message's parent is its last reference, unless that makes a loop.
        node.unlink()
        if previous is not None and previous is not node and not previous.has_ancestor(node):
            node.link_under(previous)
    # (2) the roots, (4) dummies pruned.
    roots = [node for node in {id(n): n for n in [*table.values(), *nodes]}.values()]
    roots = [node for node in roots if node.parent is None]
    roots = _prune(roots)
    # (5) roots by sent date (a dummy: its first child's, once the children are sorted).
    for root in roots:
        _sort_tree(root)
    roots.sort(key=_order)
    # (6) merge roots with the same base subject.
    by_subject: dict[str, _Node] = {}

    def subject_of(node: _Node) -> tuple[str, bool]:
        """A root's base subject and reply marker; a dummy's are its first child's."""
        shown = node if node.item is not None else node.children[0]
        assert shown.item is not None
        return subjects[shown.item.seq]

    def is_reply(node: _Node) -> bool:
        return subject_of(node)[1]

    for root in roots:
        found = subject_of(root)
        if not found[0]:
            continue
        current = by_subject.get(found[0])
        if current is None or (
            current.item is not None and (root.item is None or (is_reply(current) and not found[1]))
        ):
            by_subject[found[0]] = root
    merged: list[_Node] = []
    for root in roots:
        found = subject_of(root)
        if not found[0] or by_subject[found[0]] is root:
            merged.append(root)
            continue
        other = by_subject[found[0]]
        if other.item is None and root.item is None:
            for child in list(root.children):
                child.link_under(other)
        elif other.item is None or (found[1] and not is_reply(other)):
            root.link_under(other)
        else:
            dummy = _Node()
            index = merged.index(other) if other in merged else None
            other.link_under(dummy)
            root.link_under(dummy)
            by_subject[found[0]] = dummy
            if index is not None:
                merged[index] = dummy
            else:
                merged.append(dummy)
    # (7) siblings by sent date, all the way down; the roots again after the merge.
    for root in merged:
        _sort_tree(root)
    merged.sort(key=_order)
    return [_frozen(root) for root in merged]


def _post_order(roots: Iterable[_Node]) -> list[_Node]:
    """Every node under `roots`, children before parents, without recursion.

    A mailing-list thread can be a chain of thousands of replies: recursion per level
    would hit Python's limit (and a hostile mailbox could build any depth).
    """
    order: list[_Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def _prune(roots: list[_Node]) -> list[_Node]:
    """(4) Dummies without children go; with children they give way to them, except a
    root dummy with several children (promoting those would split the thread)."""

    def kept(children: list[_Node], node: _Node | None) -> list[_Node]:
        out: list[_Node] = []
        for child in children:
            if child.item is not None:
                out.append(child)
            elif child.children and (node is not None or len(child.children) == 1):
                for grandchild in child.children:
                    grandchild.parent = node
                out.extend(child.children)
            elif child.children:
                out.append(child)  # a root dummy with several children stays
        return out

    for node in _post_order(roots):
        node.children = kept(node.children, node)
    return kept(roots, None)


def _order(node: _Node) -> tuple[float, int]:
    shown = node if node.item is not None else node.children[0]
    assert shown.item is not None
    return (shown.date, shown.item.seq)


def _sort_tree(root: _Node) -> None:
    for node in _post_order([root]):
        node.children.sort(key=_order)


def _frozen(root: _Node) -> ThreadNode:
    built: dict[int, ThreadNode] = {}
    for node in _post_order([root]):
        built[id(node)] = ThreadNode(node.item, [built[id(child)] for child in node.children])
    return built[id(root)]


def thread_text(root: ThreadNode, number: Callable[[SortItem], int]) -> bytes:
    """One thread-list's inside (RFC 5256 §4): "1 2 (3)(4 5)", without recursion.

    A node with one child continues the chain; several children are each a nested list.
    """
    out = bytearray()
    # (node, closing): a node to write, or a ")" to close once its subtree is written.
    stack: list[tuple[ThreadNode | None, bytes]] = [(root, b"")]
    while stack:
        node, closing = stack.pop()
        if node is None:
            out += closing
            continue
        while True:
            if node.item is not None:
                if out and out[-1:] not in (b"(",):
                    out += b" "
                out += b"%d" % number(node.item)
            if len(node.children) == 1:
                node = node.children[0]
                continue
            if node.children:
                if out and out[-1:] not in (b"(",):
                    out += b" "
                for child in reversed(node.children):
                    stack.append((None, b")"))
                    stack.append((child, b""))
                    stack.append((None, b"("))
            break
    return bytes(out)
