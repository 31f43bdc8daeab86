"""Rewriting an HTML body for tracking: links to click redirects, an open pixel added.

The stdlib tokenizer (html.parser, the HTML5 tokenizer's rules) finds the start tags; only
the `href` of the tags to rewrite is replaced, by splicing the original text at the
offsets the parser reports, so every other byte (comments, conditional comments, odd
markup, broken markup) stays as the sender wrote it. The tokenizer keeps no stack, so
nesting depth costs nothing; unclosed tags end as text, as a browser would read them.

Left alone: non-HTTP(S) links (mailto:, tel:, sms:, javascript:…), in-page anchors,
unsubscribe links (an unsubscribe must work without us, RFC 8058 §3 style, and their
clicks are not engagement), links marked `data-mp-notrack`, links over URL_MAX, and links
past MAX_LINKS.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser

MAX_LINKS = 500
URL_MAX = 4096
NO_TRACK = "data-mp-notrack"
_LINK_TAGS = frozenset({"a", "area"})


@dataclass(slots=True)
class Rewritten:
    html: str
    links: list[str] = field(default_factory=list)  # original URLs by link index


def _trackable(url: str) -> bool:
    lowered = url.strip().lower()
    if not lowered.startswith(("http://", "https://")) or len(url) > URL_MAX:
        return False
    return "unsubscribe" not in lowered


class _Finder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # (line, column, tag text, url) of each link to rewrite; body end positions.
        self.links: list[tuple[int, int, str, str]] = []
        self.body_end: tuple[int, int] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _LINK_TAGS or len(self.links) >= MAX_LINKS:
            return
        names = {name for name, _ in attrs}
        if NO_TRACK in names:
            return
        hrefs = [value for name, value in attrs if name == "href"]
        if len(hrefs) != 1 or hrefs[0] is None or not _trackable(hrefs[0]):
            return
        text = self.get_starttag_text()
        if text is None:
            return
        line, col = self.getpos()
        self.links.append((line, col, text, hrefs[0].strip()))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self.getpos()


def _tag_rebuilt(tag_text: str, new_href: str) -> str:
    """The start tag with its href replaced and the no-track marker never present: the
    attributes re-read by the tokenizer and written back quoted and escaped."""
    out: list[str] = []

    class _One(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            out.append("<" + tag)
            for name, value in attrs:
                if name == "href":
                    value = new_href
                if value is None:
                    out.append(" " + name)
                else:
                    out.append(f' {name}="{html.escape(value, quote=True)}"')
            out.append(" />" if tag_text.rstrip().endswith("/>") else ">")

        handle_startendtag = handle_starttag

    parser = _One(convert_charrefs=True)
    parser.feed(tag_text)
    parser.close()
    return "".join(out) if out else tag_text


def html_rewrite(
    source: str,
    *,
    click_url: Callable[[int], str] | None,
    pixel_url: str | None,
) -> Rewritten:
    """`source` with each trackable link pointing at click_url(index) (None: links kept)
    and a 1x1 image of pixel_url before `</body>`, or at the end (None: no pixel)."""
    finder = _Finder()
    finder.feed(source)
    finder.close()
    starts = [0]
    at = source.find("\n")
    while at != -1:
        starts.append(at + 1)
        at = source.find("\n", at + 1)

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col

    edits: list[tuple[int, int, str]] = []
    links: list[str] = []
    if click_url is not None:
        for line, col, text, url in finder.links:
            at = offset(line, col)
            if source[at : at + len(text)] != text:  # the tokenizer's position is off: skip
                continue
            edits.append((at, at + len(text), _tag_rebuilt(text, click_url(len(links)))))
            links.append(url)
    if pixel_url is not None:
        pixel = (
            f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0" />'
        )
        at = offset(*finder.body_end) if finder.body_end is not None else len(source)
        edits.append((at, at, pixel))
    out: list[str] = []
    last = 0
    for start, end, text in sorted(edits, key=lambda e: e[0]):
        out.append(source[last:start])
        out.append(text)
        last = end
    out.append(source[last:])
    return Rewritten(html="".join(out), links=links)
