"""The outbound queue: accepted messages, one delivery unit per recipient, and events.

A message is durable (row + raw bytes, one transaction) before anyone answers 250/2xx.
Delivery workers claim due recipients in batches (PostgreSQL `FOR UPDATE SKIP LOCKED`;
SQLite: one worker) and record every attempt as an event.
"""
