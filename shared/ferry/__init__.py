"""Ferry: serverless data infrastructure — Datamon, Styx and Gabo on Google Cloud."""

__version__ = "0.1.0"
