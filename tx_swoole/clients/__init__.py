"""Async clients: Redis."""
