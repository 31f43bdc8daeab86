"""Asynchronous jobs owned by an account: the `/api/tasks/{id}/` the seeds poll.

A job row is written in the same transaction as the request that starts it and the Celery
task is sent on commit; a periodic sweep re-sends jobs a lost broker message left pending.
"""
