"""Scaling: the backlog, the number of delivery workers, the capacity plan, the load generator."""
