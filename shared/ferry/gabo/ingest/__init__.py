"""Ingest: events accepted over HTTP, validated, published; the ledger of what was accepted."""
