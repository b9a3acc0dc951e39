"""Provisioning: a type's Pub/Sub resources and access grants, created and kept (reconcile)."""
