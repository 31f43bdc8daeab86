"""The inbound parser on its own: what it takes apart, and hostile input that must come
out as a bounded refusal (MimeRefused) or a best-effort parse, never another exception."""

from __future__ import annotations

import json
import random

import pytest

from mailplane.inbound.parse import MAX_DEPTH, MAX_PARTS, MimeRefused, message_parse, stripped_reply


def test_encoded_words_charsets_and_transfer_encodings_are_decoded():
    raw = (
        b'From: =?iso-8859-1?q?Andr=E9?= <andre@x.test>\r\nTo: a@b.test, "C, D" <c@d.test>\r\n'
        b"Subject: =?utf-8?b?w6l0w6k=?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n"
    )
    parsed = message_parse(raw)
    assert parsed.from_ == {"email": "andre@x.test", "name": "André"}
    assert parsed.to == [{"email": "a@b.test", "name": ""}, {"email": "c@d.test", "name": "C, D"}]
    assert (parsed.subject, parsed.text.strip()) == ("été", "café")


def test_inline_images_are_attachments_with_their_content_id():
    raw = (
        b"Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<img src=cid:logo>\r\n--r\r\n"
        b"Content-Type: image/gif\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64"
        b"\r\n\r\nR0lGODlh\r\n--r--\r\n"
    )
    parsed = message_parse(raw)
    assert parsed.html.strip() == "<img src=cid:logo>"
    [image] = parsed.attachments
    assert (image.content_type, image.content_id, image.content) == ("image/gif", "logo", b"GIF89a")


def test_stripped_reply_cuts_at_the_quote():
    assert stripped_reply("Yes.\n\nOn Tue, Ann wrote:\n> q\n") == "Yes."
    assert stripped_reply("Ok\n-----Original Message-----\nold") == "Ok"
    assert stripped_reply("> only a quote") == ""


def test_part_and_depth_bounds_refuse():
    many = (
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        + b"".join(
            b"--x\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(MAX_PARTS + 1)
        )
        + b"--x--\r\n"
    )
    with pytest.raises(MimeRefused) as refused:
        message_parse(many)
    assert refused.value.smtp_reply().startswith("554 5.6.0")
    deep = b"".join(
        b"Content-Type: multipart/mixed; boundary=d%d\r\n\r\n--d%d\r\n" % (i, i)
        for i in range(MAX_DEPTH + 5)
    )
    with pytest.raises(MimeRefused):
        message_parse(deep + b"\r\nx\r\n")


def test_random_bytes_never_raise_and_give_json_safe_text():
    """Seeded fuzz: mangled MIME in, a parse out (or a bounded refusal), and every string
    in it encodable as UTF-8 JSON (no lone surrogates, no NUL)."""
    seed = (
        b"From: a@b.test\r\nSubject: =?utf-8?q?x?=\r\nContent-Type: multipart/mixed; "
        b"boundary=z\r\n\r\n--z\r\nContent-Type: text/plain; charset=utf-16\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n//79\r\n--z\r\nContent-Type: message/rfc822"
        b"\r\n\r\nSubject: inner\r\n\r\nbody\r\n--z--\r\n"
    )
    rng = random.Random(1234)
    for _ in range(400):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parsed = message_parse(bytes(data))
        except MimeRefused:
            continue
        text = json.dumps(
            {
                "t": parsed.text,
                "h": parsed.html,
                "s": parsed.subject,
                "hd": parsed.headers,
                "f": parsed.from_,
                "a": [a.filename for a in parsed.attachments],
            },
            ensure_ascii=False,
        )
        assert "\x00" not in text
        text.encode("utf-8")
