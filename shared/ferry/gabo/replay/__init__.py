"""Replay: set-aside events (dead letters, quarantine) published again."""
