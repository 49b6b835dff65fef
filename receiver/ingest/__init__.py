"""Ingest: request bodies in, normalized events out (webhook, capture), within their budgets
and privacy policies."""
