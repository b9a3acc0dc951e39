"""Styx: workflow scheduling and execution control on Cloud Run jobs (SPEC §5).

``machine`` (the pure state machine), ``scheduling`` (pure trigger, backfill and pool math),
``repository`` (state in the document store), ``launchers`` (local subprocess, Cloud Run jobs),
``service`` (execution control), ``tick`` (the scheduler's tick), ``backfills``, ``resources``,
``hooks`` (apply), ``api`` and ``cli``.
"""

from __future__ import annotations

_registered = False


def register() -> None:
    """Add Styx's apply hook to the wiring (idempotent)."""
    global _registered
    if _registered:
        return
    from ferry import wiring
    from ferry.styx.hooks import factory

    if factory not in wiring.APPLY_HOOK_FACTORIES:
        wiring.APPLY_HOOK_FACTORIES.append(factory)
    _registered = True


register()
