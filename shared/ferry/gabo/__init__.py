"""Gabo (SPEC §6): self-service event types, ingest, batched delivery into partitions, hour closing
with dedup, dead letters and a scaler.

``core`` is the pure core; ``sink`` and ``broker`` the ports and adapters; ``ingest``, ``delivery``,
``closing`` the services; ``service.gabo(services)`` the facade the API, CLI and functions call.
"""

from __future__ import annotations


def register() -> None:
    """Add Gabo's apply hook (provisioning) once per process."""
    from ferry import wiring
    from ferry.gabo.provision import GaboApplyHook

    if GaboApplyHook not in wiring.APPLY_HOOK_FACTORIES:
        wiring.APPLY_HOOK_FACTORIES.append(GaboApplyHook)


register()
