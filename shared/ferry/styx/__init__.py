"""Styx: workflow scheduling and execution control on Cloud Run jobs (docs/styx.md).

``machine`` (the pure state machine), ``scheduling`` (pure trigger, backfill and pool math),
``repository`` (state in the document store), ``launchers`` (local subprocess, Cloud Run jobs),
``service`` (execution control), ``tick`` (the scheduler's tick), ``backfills``, ``resources``,
``hooks`` (apply), ``api`` and ``cli``.
"""
