"""Notifications' collections: one document per delivery, and one per (team, channel) with its last
delivery's outcome (written by :mod:`ferry.notify.service` and the sweep, read by :mod:`ferry.notify.port`)."""

DELIVERIES = "notify_deliveries"
CHANNELS = "notify_channels"
