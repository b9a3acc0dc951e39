"""Datamon: landed partitions, SLA evaluation, the alert lifecycle and the unified view (docs/datamon.md).

``domain`` is the pure core (states and alert decisions from data and ``now``), ``repository`` the
documents it keeps, ``service`` the use cases (land, evaluate, status, ack), ``api``/``cli``/``web``
the entry points.
"""
