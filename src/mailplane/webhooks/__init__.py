"""Signed webhooks: endpoints per email server, fed from the event stream (queue/events.py).

consumer.py turns events into outbox rows (one per endpoint) under its own cursor;
runner.py POSTs them, signed as Standard Webhooks specifies (signing.py), through the
SSRF guard (guard.py), retrying on a growing schedule.
"""
