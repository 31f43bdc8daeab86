"""IP pools: the source addresses (and HELO names) outbound mail leaves from.

The operator owns the addresses: a pool is a set of them, assigned to an account, one of
its email servers, a stream or a server key; the most specific assignment of a message
wins (key > stream > server > account), else the relay's own setting. A dedicated pool
serves exactly one server key, so that key's reputation is its own (seed 002: "no
cross-contamination between API keys"). Delivery binds each connection to one address of
the message's pool (delivery/processor.py chooses, delivery/worker.py groups by it).
"""
