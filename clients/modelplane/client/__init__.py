"""Typed async clients for the modelplane services."""
