"""Darkloading: a sampled shadow stream, compared with the primary when both close."""
