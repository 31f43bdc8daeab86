"""Monitoring: is each service of a cell answering, and how deep is its queue.

`probes` speaks to the data-plane listeners the way a client does (greeting, over TLS where
the port is TLS); `selectors` reads the queue and job backlogs; `metrics` renders both in
the Prometheus text format for `/metrics`. Until accounts can have cells of their own
(issue 14), every process belongs to the cell named by MAILPLANE_CELL ("shared").
"""
