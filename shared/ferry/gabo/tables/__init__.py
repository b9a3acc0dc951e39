"""Delivered events as tables: an event type's schema as columns, Parquet parts, BigQuery tables and
``ferry query`` (docs/gabo.md, "Reading delivered data")."""
