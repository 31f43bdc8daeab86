"""tracking/rewrite.py: links rewritten by the tokenizer's offsets, the rest untouched."""

from __future__ import annotations

import time
from html.parser import HTMLParser

import pytest

from mailplane.tracking.rewrite import MAX_LINKS, html_rewrite


def click(i: int) -> str:
    return f"https://t.acme.test/c/TOKEN{i}"


PIXEL = "https://t.acme.test/o/PIXEL"


class _Shape(HTMLParser):
    """The sequence of tags and text, attributes without href/src: what must survive."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[object] = []

    def handle_starttag(self, tag, attrs):
        self.items.append((tag, [(k, v) for k, v in attrs if k != "href"]))

    def handle_endtag(self, tag):
        self.items.append(("/", tag))

    def handle_data(self, data):
        self.items.append(data)


def shape(text: str) -> list[object]:
    parser = _Shape()
    parser.feed(text)
    parser.close()
    return parser.items


def hrefs(text: str) -> list[str | None]:
    found: list[str | None] = []

    class _H(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in ("a", "area"):
                found.extend(v for k, v in attrs if k == "href")

    p = _H(convert_charrefs=True)
    p.feed(text)
    p.close()
    return found


def test_links_are_rewritten_and_the_pixel_goes_before_the_body_end():
    source = (
        '<html><body><p>Hi <a href="https://shop.test/a?b=1&amp;c=2" class=k>order</a>'
        '<area href="http://map.test/x"></p>\n<A HREF="https://b.test/">B</A></body></html>'
    )
    out = html_rewrite(source, click_url=click, pixel_url=PIXEL)
    assert out.links == ["https://shop.test/a?b=1&c=2", "http://map.test/x", "https://b.test/"]
    assert hrefs(out.html) == [click(0), click(1), click(2)]
    pixel = (
        f'<img src="{PIXEL}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0" />'
    )
    assert out.html.endswith(pixel + "</body></html>")
    # Everything but the hrefs and the pixel is the same markup.
    assert shape(out.html.replace(pixel, "")) == shape(source)


@pytest.mark.parametrize(
    "link",
    [
        '<a href="mailto:a@acme.test">m</a>',
        '<a href="tel:+3312345">t</a>',
        '<a href="#top">anchor</a>',
        '<a href="javascript:alert(1)">js</a>',
        '<a href="https://acme.test/unsubscribe?u=1">unsubscribe</a>',
        '<a href="https://acme.test/x" data-mp-notrack>kept</a>',
        "<a>no href</a>",
        '<a href="https://a.test/" href="https://b.test/">two hrefs</a>',
        '<a href="https://acme.test/' + "x" * 5000 + '">long</a>',
        '<!-- <a href="https://in.comment.test/">c</a> -->',
        "<script>document.write('<a href=\"https://in.script.test/\">')</script>",
    ],
)
def test_links_left_alone(link):
    source = f"<p>{link}</p>"
    out = html_rewrite(source, click_url=click, pixel_url=None)
    assert out.html == source and out.links == []


def test_no_pixel_no_links_is_the_source_itself():
    source = "<p><a href='https://x.test'>x</a></p>"
    assert html_rewrite(source, click_url=None, pixel_url=None).html == source


def test_links_past_the_cap_are_left_alone():
    source = "".join(f'<a href="https://x.test/{i}">{i}</a>' for i in range(MAX_LINKS + 5))
    out = html_rewrite(source, click_url=click, pixel_url=None)
    assert len(out.links) == MAX_LINKS
    assert hrefs(out.html)[-1] == f"https://x.test/{MAX_LINKS + 4}"


def test_attribute_values_are_escaped_when_the_tag_is_rebuilt():
    source = '<a title="&quot;x&quot; &lt;y&gt;" href="https://x.test/?q=&lt;">x</a>'
    out = html_rewrite(source, click_url=lambda i: 'https://t.test/c/"><script>', pixel_url=None)
    assert "<script>" not in out.html
    assert hrefs(out.html) == ['https://t.test/c/"><script>']
    assert shape(out.html) == shape(source)
    assert out.links == ["https://x.test/?q=<"]


@pytest.mark.parametrize(
    "source",
    [
        "<div>" * 10_000 + '<a href="https://deep.test/">deep</a>' + "text",
        '<p><a href="https://x.test/" title="' + "x" * 2_000_000 + '">unclosed attribute',
        "<a href=https://x.test/ " + "y=1 " * 100_000 + ">many attributes</a>",
        "<<<<>>>>&&&&<a <a href='https://x.test/'>x<</a></b></i><p<p>",
        "<table><tr><td><a href='https://x.test/'>x</td></table></a>" * 2000,
        "\x00\ud800 <a href='https://x.test/\x00'>nul</a>",
        "<a href='https://x.test/" + "é" * 1000 + "'>é</a>\r\n\r\n",
    ],
    ids=["nested-10k", "huge-unclosed-attr", "100k-attrs", "garbage", "misnested", "nul", "utf8"],
)
def test_hostile_html_keeps_every_character_and_ends_in_bounded_time(source):
    started = time.monotonic()
    out = html_rewrite(source, click_url=click, pixel_url=PIXEL)
    assert time.monotonic() - started < 10
    # Removing what was added (the pixel, the new hrefs) gives the source back, save the
    # rewritten tags: so every text and tag of the sender's is still there, in order.
    kept = out.html.replace(
        '<img src="https://t.acme.test/o/PIXEL" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0" />',
        "",
    )
    if not out.links:
        assert kept == source
    else:
        assert shape(kept) == shape(source)
