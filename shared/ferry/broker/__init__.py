"""Messaging: the publisher port and its Pub/Sub and in-memory adapters."""
