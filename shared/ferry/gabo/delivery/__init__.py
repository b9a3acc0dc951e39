"""Delivery: work orders pull a type's subscription and write staging objects to the sink."""
