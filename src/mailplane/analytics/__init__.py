"""Analytics: counters per (server, stream, tag, UTC hour, metric), a delivery-latency
histogram and bounced recipient domains per (server, UTC day), kept up to date from the
event stream (queue/events.py) by a consumer with its own cursor (consumer.py), read by
the stats endpoints without scanning events (selectors.py)."""
