"""Cells: the registry of data planes (database, storage root, host names) and the routing
of each account's data to its cell (docs/cells.md)."""
