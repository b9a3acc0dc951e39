"""Closing: a period's staging objects merged into its final partition, once it may close."""
