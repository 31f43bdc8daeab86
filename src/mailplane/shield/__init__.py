"""MI Shield: the pre-send content check (seed 002: "pre-send spam filtering").

Before a message is queued, `services.content_check` scores it: with rspamd when one is
configured (MAILPLANE_RSPAMD_URL; `mailplane serve` starts Debian's rspamd with a private
configuration when MAILPLANE_RSPAMD=1), always with the built-in checks of `checks` (no
text part, image-only, URL shorteners, dangerous attachments, a broadcast without an
unsubscribe link). Each email server decides what a score over its threshold means:
refuse the message (the API's 422 lists the symbols) or let it through (`off`).
"""
