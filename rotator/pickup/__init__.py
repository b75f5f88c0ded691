"""Pickup checks: evidence that consumers use the new key before the old one is revoked."""
