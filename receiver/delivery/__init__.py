"""Delivery: committed events out to consumers (the SSE stream, its wire format and hub)."""
