"""Gabo (docs/gabo.md): self-service event types, ingest, batched delivery into partitions, hour closing
with dedup, dead letters and a scaler.

``core`` is the pure core; ``sink``, ``broker`` and ``backlog`` the ports and adapters; ``ingest``,
``delivery``, ``closing`` the services; ``service.Gabo`` the facade the API, CLI and functions call.
"""
