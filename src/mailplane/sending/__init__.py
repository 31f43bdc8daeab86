"""The send API's ingress: a JSON message becomes a queued one, in this order:

    requests.py   parse and check the request (addresses, limits, owned headers)
    services.py   check the sender identity and stream, then
    compose.py    build the RFC 5322 message, which
                  mailplane.message.cleanup completes (trace, Date, Message-ID), and
                  mailplane.queue enqueues (queue/transitions.py: rows + events, one
                  transaction) with the server link; the 2xx follows the commit.

Nothing here speaks HTTP: errors are domain errors (core/errors.py, errors.py) that the
API renders, so SMTP for servers can reuse the same checks.
"""
